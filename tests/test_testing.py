"""ScriptedBackend: a real OpenAI-compatible server, checked with the official openai client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
import pytest

from local_ai_router.testing import (
    KNOWN_QUIRKS,
    Reply,
    ScriptedBackend,
    tokens_estimate,
    tool_call,
)

USER = [{"role": "user", "content": "hi"}]


def client(backend: ScriptedBackend, api_key: str = "x") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=backend.url, api_key=api_key, max_retries=0)


async def wait_for(condition: Callable[[], bool]) -> None:
    """Wait until the server-side effect shows up (a hang guard, not a timing assertion)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never became true")


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


# -- non-streaming ---------------------------------------------------------------------------


async def test_plain_reply_is_openai_json_and_request_is_recorded() -> None:
    async with ScriptedBackend(["Hello there, friend."]) as b:
        resp = await client(b).chat.completions.create(
            model="qwen-7b", messages=USER, temperature=0.2, extra_headers={"X-Test": "1"}
        )
        assert resp.object == "chat.completion"
        assert resp.model == "qwen-7b"
        assert resp.choices[0].message.role == "assistant"
        assert resp.choices[0].message.content == "Hello there, friend."
        assert resp.choices[0].message.tool_calls is None
        assert resp.choices[0].finish_reason == "stop"
        assert resp.usage is not None
        assert resp.usage.prompt_tokens == tokens_estimate({"messages": USER}) == 1
        assert resp.usage.completion_tokens == 5  # ceil(20 chars / 4)
        assert resp.usage.total_tokens == 6
        assert b.requests == [{"model": "qwen-7b", "messages": USER, "temperature": 0.2}]
        assert b.headers[0]["authorization"] == "Bearer x"
        assert b.headers[0]["x-test"] == "1"
        assert b.remaining == 0


async def test_tool_calls_non_stream() -> None:
    call = tool_call("read_file", {"path": "a.py"}, id="call_1")
    assert call == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
    }
    async with ScriptedBackend([Reply(tool_calls=[call, tool_call("ls", "{}")])]) as b:
        resp = await client(b).chat.completions.create(model="m", messages=USER)
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        calls = choice.message.tool_calls
        assert calls is not None
        assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
            ("call_1", "read_file", '{"path": "a.py"}'),
            (calls[1].id, "ls", "{}"),
        ]
        assert calls[1].id.startswith("call_") and calls[1].id != "call_1"


async def test_usage_override_and_finish_reason() -> None:
    reply = Reply("cut", usage={"completion_tokens": 99}, finish_reason="length")
    async with ScriptedBackend([reply]) as b:
        resp = await client(b).chat.completions.create(model="m", messages=USER)
        assert resp.choices[0].finish_reason == "length"
        assert resp.usage is not None
        assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (1, 99)
        assert resp.usage.total_tokens == 100


# -- streaming -------------------------------------------------------------------------------


async def test_stream_content_split_into_word_deltas_with_usage() -> None:
    text = "The quick  brown fox\njumps."
    async with ScriptedBackend([text]) as b:
        stream = await client(b).chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        deltas = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
        pieces = [d for d in deltas if d]
        assert "".join(pieces) == text
        assert pieces == ["The ", "quick  ", "brown ", "fox\n", "jumps."]
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 7
        assert len({c.id for c in chunks}) == 1


async def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    async with ScriptedBackend(["a b"]) as b:
        stream = await client(b).chat.completions.create(model="m", messages=USER, stream=True)
        chunks = [chunk async for chunk in stream]
        assert all(c.choices for c in chunks)
        assert all(c.usage is None for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"


async def test_stream_tool_calls_reassemble() -> None:
    args_a = {"path": "src/pkg/module.py", "content": "print('hello world')\n" * 3}
    calls = [tool_call("write_file", args_a, id="c1"), tool_call("run_shell", {"command": "ls"})]
    async with ScriptedBackend([Reply("Writing.", tool_calls=calls)]) as b:
        stream = await client(b).chat.completions.create(model="m", messages=USER, stream=True)
        built: dict[int, dict[str, Any]] = {}
        fragments: dict[int, int] = {}
        text, finish = "", None
        async for chunk in stream:
            choice = chunk.choices[0]
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = built.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                    assert tc.type == "function" and tc.function is not None
                    assert tc.function.arguments == ""  # first delta: name, empty arguments
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
                    fragments[tc.index] = fragments.get(tc.index, 0) + 1
        assert text == "Writing."
        assert finish == "tool_calls"
        assert built[0]["id"] == "c1" and built[0]["name"] == "write_file"
        assert json.loads(built[0]["arguments"]) == args_a
        assert fragments[0] > 1  # arguments arrive in several fragments
        assert built[1]["name"] == "run_shell"
        assert json.loads(built[1]["arguments"]) == {"command": "ls"}


async def test_long_text_is_grouped_into_bounded_deltas() -> None:
    text = " ".join(f"w{i}" for i in range(1000))
    async with ScriptedBackend([text]) as b:
        stream = await client(b).chat.completions.create(model="m", messages=USER, stream=True)
        deltas = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
        assert "".join(deltas) == text
        assert 1 < len(deltas) <= 64


async def test_mid_stream_failure_drops_the_connection() -> None:
    async with ScriptedBackend([Reply("one two three four", fail_after_chunks=3)]) as b:
        stream = await client(b).chat.completions.create(model="m", messages=USER, stream=True)
        seen: list[str] = []
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")
        assert "".join(seen) == "one two "  # role chunk + two words, then the drop


async def test_non_stream_failure_sends_half_a_body(http: httpx2.AsyncClient) -> None:
    script = [Reply("x", fail_after_chunks=0), Reply("y", fail_after_chunks=1)]
    async with ScriptedBackend(script) as b:
        for _ in range(2):
            with pytest.raises(httpx2.RemoteProtocolError):
                await http.post(b.base_url + "/v1/chat/completions", json={"messages": USER})
        assert len(b.requests) == 2


async def test_raw_body_is_sent_verbatim(http: httpx2.AsyncClient) -> None:
    raw_sse = 'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: {broken\n\n'
    script = [Reply(raw_body='{"choices": [ not json'), Reply(raw_body=raw_sse, status=200)]
    async with ScriptedBackend(script) as b:
        resp = await http.post(b.base_url + "/v1/chat/completions", json={"messages": USER})
        assert resp.status_code == 200
        assert resp.text == '{"choices": [ not json'
        resp = await http.post(
            b.base_url + "/v1/chat/completions", json={"messages": USER, "stream": True}
        )
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.text == raw_sse


# -- errors, limits, script handling ---------------------------------------------------------


async def test_error_status_uses_openai_error_shape(http: httpx2.AsyncClient) -> None:
    script = [
        Reply(status=429, error_message="slow down"),
        Reply(status=503, error_message="overloaded"),
        Reply(status=500),
    ]
    async with ScriptedBackend(script) as b:
        with pytest.raises(openai.RateLimitError) as rate:
            await client(b).chat.completions.create(model="m", messages=USER)
        assert rate.value.status_code == 429
        assert rate.value.body == {"message": "slow down", "type": "rate_limit_error", "code": 429}
        with pytest.raises(openai.InternalServerError) as unavailable:
            await client(b).chat.completions.create(model="m", messages=USER, stream=True)
        assert unavailable.value.status_code == 503
        assert "overloaded" in str(unavailable.value)
        resp = await http.post(b.base_url + "/v1/chat/completions", json={"messages": USER})
        assert resp.status_code == 500
        assert resp.json()["error"]["type"] == "server_error"


async def test_context_limit_answers_like_vllm_and_keeps_the_script() -> None:
    messages = [{"role": "user", "content": "x" * 300}]  # 75 tokens
    async with ScriptedBackend(["fits"], context_window=100) as b:
        with pytest.raises(openai.BadRequestError) as exc:
            await client(b).chat.completions.create(model="m", messages=messages, max_tokens=50)
        expected = (
            "This model's maximum context length is 100 tokens. However, you requested 125 "
            "tokens (75 in the messages, 50 in the completion). Please reduce the length of the "
            "messages or completion."
        )
        assert exc.value.body == {
            "object": "error",
            "message": expected,
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        assert b.rejected == 1 and b.remaining == 1
        resp = await client(b).chat.completions.create(model="m", messages=messages, max_tokens=25)
        assert resp.choices[0].message.content == "fits"
        assert b.rejected == 1 and len(b.requests) == 2


async def test_context_limit_counts_tools_and_prompt_alone(http: httpx2.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = {"messages": [{"role": "user", "content": "y" * 40}], "tools": tools}
    prompt = tokens_estimate(body)
    assert prompt == -(-(40 + len(json.dumps(tools))) // 4)
    async with ScriptedBackend(default="ok", context_window=prompt) as b:
        assert (await http.post(b.base_url + "/v1/chat/completions", json=body)).status_code == 200
        b.context_window = prompt - 1
        resp = await http.post(b.base_url + "/v1/chat/completions", json=body)
        assert resp.status_code == 400
        assert f"({prompt} in the messages, 0 in the completion)" in resp.json()["message"]
        assert b.rejected == 1


def test_tokens_estimate_is_documented_formula() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "abcd" * 3 + "e"},  # 13
            {"role": "assistant", "content": None, "tool_calls": [tool_call("f", "wxyz")]},  # 4
            {"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "image_url"}]},
        ],
        "tools": [{"a": 1}],  # json.dumps -> '[{"a": 1}]', 10 chars
    }
    assert tokens_estimate(body) == 8  # ceil(29 / 4)
    assert ScriptedBackend.tokens_estimate({"messages": "junk"}) == 0
    assert tokens_estimate({"messages": [None, {"content": 5, "tool_calls": "x"}]}) == 0


async def test_script_exhausted_then_default() -> None:
    async with ScriptedBackend(["only"]) as b:
        first = await client(b).chat.completions.create(model="m", messages=USER)
        assert first.choices[0].message.content == "only"
        with pytest.raises(openai.InternalServerError, match="script exhausted"):
            await client(b).chat.completions.create(model="m", messages=USER)
        b.set_default("again")
        b.add("queued")
        contents = []
        for _ in range(3):
            resp = await client(b).chat.completions.create(model="m", messages=USER)
            contents.append(resp.choices[0].message.content)
        assert contents == ["queued", "again", "again"]
        assert len(b.requests) == 5


async def test_record_false_keeps_no_bodies() -> None:
    async with ScriptedBackend(default="ok", record=False) as b:
        resp = await client(b).chat.completions.create(model="m", messages=USER)
        assert resp.choices[0].message.content == "ok"
        assert b.requests == [] and b.headers == []
        assert b.hits["/v1/chat/completions"] == 1


async def test_callable_replies_see_the_request() -> None:
    async def slow_echo(body: dict[str, Any]) -> Reply:
        await asyncio.sleep(0)
        return Reply(f"async {body['model']}")

    def boom(body: dict[str, Any]) -> Reply:
        raise ValueError("boom")

    script = [
        lambda body: "echo: " + body["messages"][-1]["content"],
        slow_echo,
        boom,
        lambda body: 42,
    ]
    async with ScriptedBackend(script) as b:
        c = client(b)
        one = await c.chat.completions.create(model="m", messages=USER)
        assert one.choices[0].message.content == "echo: hi"
        two = await c.chat.completions.create(model="big", messages=USER)
        assert two.choices[0].message.content == "async big"
        with pytest.raises(openai.InternalServerError, match="callable raised ValueError: boom"):
            await c.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.InternalServerError, match="returned int; expected Reply"):
            await c.chat.completions.create(model="m", messages=USER)


async def test_bad_requests_get_clear_400s(http: httpx2.AsyncClient) -> None:
    async with ScriptedBackend(default="ok") as b:
        cases = [
            (b"{not json", "not valid JSON"),
            (b"[1, 2]", "must be a JSON object"),
            (b'{"model": "m"}', "'messages' must be a list"),
            (b'{"messages": [{"content": "x"}]}', "string 'role'"),
            (b'{"messages": [], "max_tokens": "9"}', "'max_tokens' must be an integer"),
        ]
        for raw, message in cases:
            resp = await http.post(b.base_url + "/v1/chat/completions", content=raw)
            assert resp.status_code == 400
            assert message in resp.json()["error"]["message"]
        assert b.requests == []
        resp = await http.post(b.base_url + "/v1/nothing-here")
        assert resp.status_code == 404 and "error" in resp.json()


def test_bad_construction_is_rejected_early() -> None:
    with pytest.raises(ValueError, match="delay"):
        Reply("x", delay=-1)
    with pytest.raises(ValueError, match="status"):
        Reply(status=99)
    with pytest.raises(ValueError, match="error status"):
        Reply(error_message="oops")
    with pytest.raises(TypeError, match="tool_calls"):
        Reply(tool_calls=["read_file"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="content"):
        Reply(content=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fail_after_chunks"):
        Reply(fail_after_chunks=-1)
    with pytest.raises(ValueError, match="unknown kind"):
        ScriptedBackend(kind="tgi")
    with pytest.raises(ValueError, match="unknown quirks"):
        ScriptedBackend(quirks={"no_such_quirk"})
    with pytest.raises(ValueError, match="context_window"):
        ScriptedBackend(context_window=0)
    with pytest.raises(TypeError, match="script items"):
        ScriptedBackend([42])  # type: ignore[list-item]
    with pytest.raises(RuntimeError, match="not running"):
        _ = ScriptedBackend().url


# -- quirks ----------------------------------------------------------------------------------


async def test_quirk_llamacpp_null_content_500() -> None:
    history = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [tool_call("ls", "{}", id="1")]},
        {"role": "tool", "tool_call_id": "1", "content": "a.py"},
    ]
    async with ScriptedBackend(["done"], quirks={"llamacpp_null_content_500"}) as b:
        with pytest.raises(openai.InternalServerError):
            await client(b).chat.completions.create(model="m", messages=history)
        assert b.remaining == 1
        history[1] = {**history[1], "content": ""}
        resp = await client(b).chat.completions.create(model="m", messages=history)
        assert resp.choices[0].message.content == "done"


async def test_quirk_llamacpp_stream_tool_choice_empty(http: httpx2.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = {"messages": USER, "stream": True, "tools": tools, "tool_choice": "auto"}
    async with ScriptedBackend(["text"], quirks={"llamacpp_stream_tool_choice_empty"}) as b:
        resp = await http.post(b.base_url + "/v1/chat/completions", json=body)
        assert (resp.status_code, resp.content) == (200, b"")
        stream = await client(b).chat.completions.create(
            model="m", messages=USER, stream=True, tools=tools, tool_choice="auto"
        )
        assert [c async for c in stream] == []
        assert b.remaining == 1
        stream = await client(b).chat.completions.create(
            model="m", messages=USER, stream=True, tools=tools
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "text"


async def test_quirk_llamacpp_no_stream_usage_and_vllm_empty_choices() -> None:
    quirks = {"llamacpp_no_stream_usage", "vllm_overflow_empty_choices"}
    assert quirks <= KNOWN_QUIRKS
    async with ScriptedBackend(["a b"], quirks=quirks, context_window=10) as b:
        stream = await client(b).chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        assert all(c.usage is None and c.choices for c in [c async for c in stream])
        long = [{"role": "user", "content": "z" * 100}]
        resp = await client(b).chat.completions.create(model="m", messages=long)
        assert resp.choices == []
        assert b.rejected == 1


# -- disconnects, concurrency, lifecycle -----------------------------------------------------


async def test_client_disconnect_mid_stream_is_counted() -> None:
    script = [Reply("a b c d e f g", chunk_delay=0.05), Reply("a b c", chunk_delay=0.001)]
    async with ScriptedBackend(script) as b, httpx2.AsyncClient() as http:
        body = {"messages": USER, "stream": True}
        async with http.stream("POST", b.url + "/chat/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                assert line.startswith("data: ")
                break  # leave after the first event
        await wait_for(lambda: b.cancelled == 1)
        resp = await http.post(b.url + "/chat/completions", json=body)
        assert resp.text.endswith("data: [DONE]\n\n")  # a finished stream is not a cancel
        await wait_for(lambda: b.active == 0)
        assert b.cancelled == 1


async def test_delay_does_not_block_other_requests_and_disconnect_is_counted() -> None:
    def answer(body: dict[str, Any]) -> Reply:
        slow = body["messages"][0]["content"] == "slow"
        return Reply("late", delay=30) if slow else Reply("fast")

    async with ScriptedBackend(default=answer) as b:
        c = client(b)
        slow = asyncio.create_task(
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "slow"}])
        )
        await wait_for(lambda: b.active == 1)
        fast = await c.chat.completions.create(model="m", messages=USER)
        assert fast.choices[0].message.content == "fast"
        assert b.active == 1 and b.max_active == 2
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        await wait_for(lambda: b.cancelled == 1 and b.active == 0)


async def test_stop_closes_in_flight_requests_and_can_restart() -> None:
    b = ScriptedBackend(default=Reply("never", delay=30))
    await b.start()
    first_port = b.port
    pending = asyncio.create_task(client(b).chat.completions.create(model="m", messages=USER))
    await wait_for(lambda: b.active == 1)
    await asyncio.wait_for(b.stop(), 10)  # hang guard: stop must not wait for the 30 s delay
    with pytest.raises(openai.APIConnectionError):
        await pending
    assert b.cancelled == 0  # shutting down is not a client disconnect
    await b.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = b.url
    async with b:
        with pytest.raises(RuntimeError, match="already running"):
            await b.start()
        b.set_default("back")
        resp = await client(b).chat.completions.create(model="m", messages=USER)
        assert resp.choices[0].message.content == "back"
    assert first_port > 0


def test_run_in_thread_serves_sync_clients() -> None:
    backend = ScriptedBackend(["sync hello", Reply(tool_calls=[tool_call("ls", {})])])
    with backend.run_in_thread() as b:
        sync = openai.OpenAI(base_url=b.url, api_key="x", max_retries=0)
        first = sync.chat.completions.create(model="m", messages=USER)
        assert first.choices[0].message.content == "sync hello"
        stream = sync.chat.completions.create(model="m", messages=USER, stream=True)
        names = [
            tc.function.name
            for chunk in stream
            for tc in chunk.choices[0].delta.tool_calls or []
            if tc.function and tc.function.name
        ]
        assert names == ["ls"]
        assert len(b.requests) == 2
        url = b.base_url
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url + "/health")


# -- health, keys, discovery endpoints -------------------------------------------------------


async def test_unhealthy_answers_503_everywhere(http: httpx2.AsyncClient) -> None:
    async with ScriptedBackend(default="ok") as b:
        assert (await http.get(b.base_url + "/health")).json() == {"status": "ok"}
        b.healthy = False
        for resp in [
            await http.get(b.base_url + "/health"),
            await http.get(b.base_url + "/v1/models"),
            await http.post(b.base_url + "/v1/chat/completions", json={"messages": USER}),
        ]:
            assert resp.status_code == 503
            assert "unhealthy" in resp.json()["error"]["message"]
        assert b.requests == []
        b.healthy = True
        assert (await http.get(b.base_url + "/health")).status_code == 200
        assert b.hits["/health"] == 3 and b.hits["/v1/chat/completions"] == 1


async def test_api_key_is_required_when_set(http: httpx2.AsyncClient) -> None:
    async with ScriptedBackend(default="ok", api_key="s3cret") as b:
        with pytest.raises(openai.AuthenticationError):
            await client(b, api_key="wrong").chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.AuthenticationError):
            await client(b, api_key="wrong").models.list()
        resp = await client(b, api_key="s3cret").chat.completions.create(model="m", messages=USER)
        assert resp.choices[0].message.content == "ok"
        assert (await http.get(b.base_url + "/health")).status_code == 200  # probes need no key
        assert len(b.requests) == 1


async def test_models_endpoint_per_kind(http: httpx2.AsyncClient) -> None:
    async with ScriptedBackend(models=["a", "b"], context_window=8192) as b:
        data = (await http.get(b.base_url + "/v1/models")).json()
        assert data["object"] == "list"
        assert [(m["id"], m["object"], m["max_model_len"]) for m in data["data"]] == [
            ("a", "model", 8192),
            ("b", "model", 8192),
        ]
        models = await client(b).models.list()
        assert [m.id for m in models.data] == ["a", "b"]
    async with ScriptedBackend(kind="llamacpp", context_window=4096) as b:
        data = (await http.get(b.base_url + "/v1/models")).json()
        assert "max_model_len" not in data["data"][0]
    async with ScriptedBackend(kind="vllm") as b:
        assert "max_model_len" not in (await http.get(b.base_url + "/v1/models")).json()["data"][0]


async def test_llamacpp_props_and_ollama_show(http: httpx2.AsyncClient) -> None:
    async with ScriptedBackend(kind="llamacpp", context_window=4096) as b:
        props = (await http.get(b.base_url + "/props")).json()
        assert props == {"default_generation_settings": {"n_ctx": 4096}, "n_ctx": 4096}
        assert (
            await http.post(b.base_url + "/api/show", json={"model": "scripted-model"})
        ).status_code == 404
    async with ScriptedBackend(kind="ollama", models=["qwen2.5:7b"], context_window=2048) as b:
        show = await http.post(b.base_url + "/api/show", json={"model": "qwen2.5:7b"})
        assert show.json()["model_info"]["llama.context_length"] == 2048
        missing = await http.post(b.base_url + "/api/show", json={"model": "other"})
        assert missing.status_code == 404 and "not found" in missing.json()["error"]
        assert (await http.post(b.base_url + "/api/show", content=b"{oops")).status_code == 400
        assert (await http.get(b.base_url + "/props")).status_code == 404
    async with ScriptedBackend(kind="ollama") as b:
        info = (await http.post(b.base_url + "/api/show", json={"model": "scripted-model"})).json()[
            "model_info"
        ]
        assert "llama.context_length" not in info
