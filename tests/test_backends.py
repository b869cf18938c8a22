"""The OpenAI-compatible adapter and server profiles: unit level on httpx2.MockTransport,
then the llama.cpp quirks end to end through the gateway against ScriptedBackend."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from local_ai_router.backends.openai_compat import OpenAICompatBackend, parse_chat_response
from local_ai_router.backends.profiles import profile_for
from local_ai_router.config import BackendConfig
from local_ai_router.server import create_app
from local_ai_router.testing import Reply, ScriptedBackend, tool_call
from local_ai_router.types import (
    BackendHTTPError,
    BackendProtocolError,
    BackendUnavailable,
    ContextLengthError,
)

URL = "http://127.0.0.1:9/v1"  # never contacted: MockTransport answers
HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
Handler = Callable[[httpx2.Request], httpx2.Response]


def completion(content: str | None = "ok", **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    message.update(extra)
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }


class Recorder:
    """A MockTransport handler that answers with ``respond`` and keeps each request."""

    def __init__(self, respond: Handler):
        self.respond = respond
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.respond(request)

    def body(self, i: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[i].content)


def make(respond: Handler, kind: str = "vllm", **cfg: Any) -> tuple[OpenAICompatBackend, Recorder]:
    rec = Recorder(respond)
    config = BackendConfig(name="b", url=URL, kind=kind, models=["m"], **cfg)  # type: ignore[arg-type]
    return OpenAICompatBackend(config, transport=httpx2.MockTransport(rec)), rec


def raising(exc: Exception) -> Handler:
    def respond(request: httpx2.Request) -> httpx2.Response:
        raise exc

    return respond


# --------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("exc", "word"),
    [
        (httpx2.ConnectError("connection refused"), "unreachable"),
        (httpx2.ReadTimeout("slow"), "timed out"),
        (httpx2.RemoteProtocolError("peer closed"), "unreachable"),
    ],
)
async def test_transport_failures_are_unavailable(exc: Exception, word: str):
    b, _ = make(raising(exc))
    with pytest.raises(BackendUnavailable, match=word) as info:
        await b.chat({"messages": HI})
    assert info.value.backend == "b"
    with pytest.raises(BackendUnavailable):
        await b.open_stream({"messages": HI})
    with pytest.raises(BackendUnavailable):
        await b.models()
    assert await b.health(1.0) is False


async def test_5xx_is_http_error_with_upstream_message():
    err = {"error": {"message": "overloaded", "type": "server_error"}}
    b, _ = make(lambda r: httpx2.Response(503, json=err))
    with pytest.raises(BackendHTTPError, match="HTTP 503: overloaded") as info:
        await b.chat({"messages": HI})
    assert info.value.status == 503 and not isinstance(info.value, ContextLengthError)
    with pytest.raises(BackendHTTPError) as info:
        await b.open_stream({"messages": HI})
    assert info.value.status == 503
    assert await b.health(1.0) is False


async def test_vllm_context_message_is_context_length_error():
    msg = (
        "This model's maximum context length is 8192 tokens. However, you requested 9000 "
        "tokens (8000 in the messages, 1000 in the completion)."
    )
    b, _ = make(lambda r: httpx2.Response(400, json={"object": "error", "message": msg}))
    with pytest.raises(ContextLengthError, match="maximum context length is 8192") as info:
        await b.chat({"messages": HI})
    assert info.value.status == 400
    # An ordinary 400 stays an ordinary HTTP error.
    b, _ = make(lambda r: httpx2.Response(400, json={"error": {"message": "bad temperature"}}))
    with pytest.raises(BackendHTTPError) as plain:
        await b.chat({"messages": HI})
    assert not isinstance(plain.value, ContextLengthError)


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx2.Response(200, text="<html>proxy error</html>"), "invalid JSON"),
        (httpx2.Response(200, json=[1, 2]), "non-object"),
        (httpx2.Response(200, json={"id": "x", "choices": []}), "no choices"),
        (httpx2.Response(200, json={"id": "x"}), "no choices"),
    ],
)
async def test_malformed_replies_are_protocol_errors(response: httpx2.Response, match: str):
    b, _ = make(lambda r: response)
    with pytest.raises(BackendProtocolError, match=match):
        await b.chat({"messages": HI})
    with pytest.raises(BackendProtocolError):
        await b.complete({"messages": HI})


def test_parse_chat_response_never_trusts_the_shape():
    data = completion(None, tool_calls=[tool_call("f", {"x": 1}, id="c"), "junk", {"x": 1}])
    result = parse_chat_response(data)
    assert result.content is None and result.usage.prompt_tokens == 5
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("c", "f", '{"x": 1}')]
    odd = {"choices": [{"message": "not a dict"}], "usage": {"prompt_tokens": "many"}}
    result = parse_chat_response(odd)
    assert result.content is None and result.tool_calls == [] and result.usage.prompt_tokens == 0
    with pytest.raises(BackendProtocolError):
        parse_chat_response({"choices": []})


async def test_chat_sends_body_model_and_api_key(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MY_GPU_KEY", "sekret")
    b, rec = make(lambda r: httpx2.Response(200, json=completion()), api_key_env="MY_GPU_KEY")
    data = await b.chat({"model": "m", "messages": HI, "stream_options": {"include_usage": True}})
    assert data["choices"][0]["message"]["content"] == "ok"
    req = rec.requests[0]
    assert str(req.url) == f"{URL}/chat/completions"
    assert req.headers["authorization"] == "Bearer sekret"
    assert rec.body() == {"model": "m", "messages": HI, "stream": False}


# --------------------------------------------------------------------------- streaming


def sse_body(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + (
        b"data: [DONE]\n\n"
    )


async def test_stream_yields_data_payloads_only():
    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
    body = b": keep-alive\n\n" + sse_body(chunk, chunk)
    headers = {"content-type": "text/event-stream"}
    b, rec = make(lambda r: httpx2.Response(200, content=body, headers=headers))
    up = await b.open_stream({"messages": HI})
    events = [json.loads(e) async for e in up.events()]
    await up.aclose()
    assert events == [chunk, chunk]
    assert rec.body()["stream"] is True


async def test_server_ignoring_stream_flag_is_rechunked():
    b, _ = make(lambda r: httpx2.Response(200, json=completion("whole answer")))
    up = await b.open_stream({"messages": HI})
    events = [json.loads(e) async for e in up.events()]
    assert events[0]["choices"][0]["delta"]["content"] == "whole answer"
    assert events[1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["usage"]["prompt_tokens"] == 5
    b, _ = make(lambda r: httpx2.Response(200, json={"choices": []}))
    with pytest.raises(BackendProtocolError, match="not a completion"):
        await b.open_stream({"messages": HI})


# --------------------------------------------------------------------------- llama.cpp profile


async def test_llamacpp_sends_empty_string_for_null_assistant_content():
    msgs = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("f", {}, id="c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    b, rec = make(lambda r: httpx2.Response(200, json=completion()), kind="llamacpp")
    await b.chat({"messages": msgs})
    assert rec.body()["messages"][1]["content"] == ""
    assert msgs[1]["content"] is None  # the caller's messages are not mutated
    v, vrec = make(lambda r: httpx2.Response(200, json=completion()), kind="vllm")
    await v.chat({"messages": msgs})
    assert vrec.body()["messages"][1]["content"] is None  # other servers get it as sent


async def test_llamacpp_json_schema_becomes_json_object_with_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    b, rec = make(lambda r: httpx2.Response(200, json=completion("{}")), kind="llamacpp")
    await b.chat({"messages": HI, "response_format": rf})
    assert rec.body()["response_format"] == {"type": "json_object", "schema": schema}
    await b.chat({"messages": HI, "response_format": {"type": "json_schema", "json_schema": "?"}})
    assert rec.body()["response_format"] == {"type": "json_object"}
    v, vrec = make(lambda r: httpx2.Response(200, json=completion("{}")), kind="vllm")
    await v.chat({"messages": HI, "response_format": rf})
    assert vrec.body()["response_format"] == rf


async def test_llamacpp_stream_with_auto_tools_is_served_by_a_plain_call():
    call = tool_call("f", {"x": 1}, id="c1")
    reply = completion(None, tool_calls=[call])
    reply["choices"][0]["finish_reason"] = "tool_calls"
    b, rec = make(lambda r: httpx2.Response(200, json=reply), kind="llamacpp")
    up = await b.open_stream({"messages": HI, "tools": TOOLS, "tool_choice": "auto"})
    events = [json.loads(e) async for e in up.events()]
    assert rec.body()["stream"] is False
    delta = events[0]["choices"][0]["delta"]
    assert delta["tool_calls"] == [{**call, "index": 0}] and delta["content"] == ""
    assert events[1]["choices"][0]["finish_reason"] == "tool_calls"
    # Without tools, or with a forced tool_choice, llama.cpp streams fine.
    sse = {"content-type": "text/event-stream"}
    b, rec = make(lambda r: httpx2.Response(200, content=sse_body(), headers=sse), kind="llamacpp")
    await b.open_stream({"messages": HI})
    await b.open_stream({"messages": HI, "tools": TOOLS, "tool_choice": "required"})
    assert [json.loads(r.content)["stream"] for r in rec.requests] == [True, True]


def test_profiles_by_kind():
    assert profile_for("llamacpp").stream_with_tools_broken is True
    assert profile_for("vllm").stream_with_tools_broken is False
    assert profile_for("no-such-kind").kind == "openai"


# --------------------------------------------------------------------------- discovery


def router(routes: dict[tuple[str, str], httpx2.Response]) -> Handler:
    def respond(request: httpx2.Request) -> httpx2.Response:
        return routes.get((request.method, request.url.path), httpx2.Response(404, json={}))

    return respond


async def test_context_window_discovery_per_kind():
    models = {"data": [{"id": "other", "max_model_len": 1}, {"id": "m", "max_model_len": 8192}]}
    vllm, _ = make(router({("GET", "/v1/models"): httpx2.Response(200, json=models)}))
    assert await vllm.discover_context_window("m") == 8192

    props = {"default_generation_settings": {"n_ctx": 4096}}
    llama, rec = make(router({("GET", "/props"): httpx2.Response(200, json=props)}), "llamacpp")
    assert await llama.discover_context_window("m") == 4096
    assert str(rec.requests[0].url) == "http://127.0.0.1:9/props"  # the server root, not /v1

    # llama-cpp-python has no /props: fall back to /v1/models.
    fallback = router({("GET", "/v1/models"): httpx2.Response(200, json=models)})
    llama2, _ = make(fallback, "llamacpp")
    assert await llama2.discover_context_window("m") == 8192

    show = {"parameters": "stop x\nnum_ctx 6144", "model_info": {"llama.context_length": 131072}}
    ollama, rec = make(router({("POST", "/api/show"): httpx2.Response(200, json=show)}), "ollama")
    assert await ollama.discover_context_window("m") == 6144  # num_ctx is what it really uses
    assert json.loads(rec.requests[0].content) == {"model": "m"}
    info_only = {"model_info": {"qwen2.context_length": 32768}}
    ollama2, _ = make(
        router({("POST", "/api/show"): httpx2.Response(200, json=info_only)}), "ollama"
    )
    assert await ollama2.discover_context_window("m") == 32768


async def test_discovery_config_override_and_failures():
    models = {"data": [{"id": "m", "max_model_len": 8192}]}
    b, rec = make(
        router({("GET", "/v1/models"): httpx2.Response(200, json=models)}), context_window=2048
    )
    assert await b.discover_context_window("m") == 2048
    assert rec.requests == []  # configured: the server is not asked
    broken, _ = make(lambda r: httpx2.Response(200, text="not json"))
    assert await broken.discover_context_window("m") is None
    down, _ = make(raising(httpx2.ConnectError("refused")), "ollama")
    assert await down.discover_context_window("m") is None
    plain, rec = make(lambda r: httpx2.Response(200, json=models), "openai")
    assert await plain.discover_context_window("m") is None and rec.requests == []


async def test_models_listing_and_health_path():
    data = {"data": [{"id": "a"}, {"no": "id"}, "junk", {"id": "b"}]}
    b, rec = make(lambda r: httpx2.Response(200, json=data))
    assert [m["id"] for m in await b.models()] == ["a", "b"]
    assert await b.health(1.0) is True
    assert str(rec.requests[-1].url) == f"{URL}/models"
    bad, _ = make(lambda r: httpx2.Response(200, json={"data": "x"}))
    with pytest.raises(BackendProtocolError):
        await bad.models()


# --------------------------------------------------------------------------- end to end


async def test_llamacpp_quirks_end_to_end_through_the_gateway(served, make_settings):
    quirks = {"llamacpp_null_content_500", "llamacpp_stream_tool_choice_empty"}
    call = tool_call("f", {"x": 1})
    b = ScriptedBackend(kind="llamacpp", quirks=quirks, models=["smol"], default="fine")
    async with b:
        direct = openai.AsyncOpenAI(base_url=b.url, api_key="x", max_retries=0)
        settings = make_settings(
            backends=[{"name": "llama", "url": b.url, "kind": "llamacpp", "models": ["smol"]}]
        )
        url = await served(create_app(settings, with_agent=False))
        gw = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        history: list[Any] = [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "42"},
        ]
        # The quirk is real: straight to the server, a null content is a 500 ...
        with pytest.raises(openai.InternalServerError):
            await direct.chat.completions.create(model="smol", messages=history)
        # ... and through the gateway the same request works.
        r = await gw.chat.completions.create(model="smol", messages=history)
        assert r.choices[0].message.content == "fine"
        assert b.requests[-1]["messages"][1]["content"] == ""

        # Streaming with tools + tool_choice auto: empty straight from the server ...
        b.add(Reply(tool_calls=[call]))
        stream = await direct.chat.completions.create(
            model="smol", messages=history[:1], tools=TOOLS, tool_choice="auto", stream=True
        )
        assert [c async for c in stream] == []
        # ... a real tool call through the gateway (a plain call, re-chunked).
        stream = await gw.chat.completions.create(
            model="smol", messages=history[:1], tools=TOOLS, tool_choice="auto", stream=True
        )
        chunks = [c async for c in stream]
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
        assert [(tc.function.name, tc.function.arguments) for tc in calls] == [("f", '{"x": 1}')]
        assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "tool_calls"
        assert b.requests[-1]["stream"] is False and b.remaining == 0
