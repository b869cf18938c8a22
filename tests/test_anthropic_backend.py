"""``kind: anthropic``: the gateway calling a Messages API server (hybrid mode).

End to end, the Messages server is a second gateway's ``/v1/messages`` facade in front of a
ScriptedBackend: OpenAI client -> gateway A -> (Anthropic wire) -> gateway B -> backend.
What the backend received shows that a request survives both translations; unit tests pin
the Anthropic shapes themselves, so the two directions cannot hide each other's mistakes.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local_ai_router.backends.anthropic import (
    AnthropicStream,
    anthropic_request,
    openai_completion,
)
from local_ai_router.gateway.anthropic_wire import StreamTranslator, message_from_openai
from local_ai_router.server import create_app
from local_ai_router.testing import Reply, tool_call
from local_ai_router.types import BackendUnavailable

HI = [{"role": "user", "content": "hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def chain(backends, served, make_settings, *script: Any, **cfg: Any):
    """(openai client on gateway A, the ScriptedBackend behind gateway B)."""
    local = await backends(*script, models=["qwen"])
    url_b = await served(
        create_app(make_settings(backends=[local.as_backend("gpu")]), with_agent=False)
    )
    settings_a = make_settings(
        backends=[{"name": "claude", "url": url_b, "kind": "anthropic", "api_key_env": "K"}],
        **cfg,
    )
    url_a = await served(create_app(settings_a, with_agent=False))
    client = openai.AsyncOpenAI(base_url=f"{url_a}/v1", api_key="unused", max_retries=0)
    return client, local


async def test_chat_and_tool_calls_through_the_messages_api(
    backends, served, make_settings, monkeypatch
):
    monkeypatch.setenv("K", "sk-ant-test")
    client, local = await chain(
        backends,
        served,
        make_settings,
        Reply(tool_calls=[tool_call("get_weather", {"city": "Oslo"}, id="call_1")]),
        Reply(content="Cold.", usage={"prompt_tokens": 30, "completion_tokens": 2}),
    )
    first = await client.chat.completions.with_raw_response.create(
        model="qwen",
        messages=[{"role": "system", "content": "Be brief."}, *HI],
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=50,
    )
    reply = first.parse()
    assert first.headers["x-backend"] == "claude"
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_1",
        "get_weather",
        {"city": "Oslo"},
    )
    second = await client.chat.completions.create(
        model="qwen",
        messages=[
            {"role": "system", "content": "Be brief."},
            *HI,
            reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "call_1", "content": "-5 C"},
        ],
        tools=[WEATHER],
        max_tokens=50,
    )
    assert second.choices[0].message.content == "Cold."
    assert (second.usage.prompt_tokens, second.usage.completion_tokens) == (30, 2)
    seen = local.requests[1]  # after OpenAI -> Anthropic -> OpenAI
    assert seen["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen["messages"][2]["tool_calls"][0]["id"] == "call_1"
    assert seen["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "-5 C"}
    assert local.requests[0]["tool_choice"] == "required"


async def test_streams_come_back_as_openai_chunks(backends, served, make_settings):
    client, _ = await chain(
        backends,
        served,
        make_settings,
        Reply(content="one two three"),
        Reply(tool_calls=[tool_call("get_weather", {"city": "Rome"})]),
    )
    stream = await client.chat.completions.create(
        model="qwen", messages=HI, max_tokens=20, stream=True
    )
    text, finish = [], None
    async for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == "one two three" and finish == "stop" and len(text) > 2

    stream = await client.chat.completions.create(
        model="qwen", messages=HI, max_tokens=20, stream=True, tools=[WEATHER]
    )
    args, name = "", ""
    async for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                name += tc.function.name or ""
                args += tc.function.arguments or ""
    assert name == "get_weather" and json.loads(args) == {"city": "Rome"}


async def test_errors_map_to_backend_errors_and_fall_back(backends, served, make_settings):
    client, _ = await chain(backends, served, make_settings, Reply(status=400, error_message="x"))
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="qwen", messages=HI, max_tokens=5)
    assert "backend claude answered HTTP 400" in str(bad.value)
    # A Messages server that is down: the next candidate answers.
    local = await backends(models=["m"])
    settings = make_settings(
        backends=[
            {
                "name": "claude",
                "url": "http://127.0.0.1:9/v1",
                "kind": "anthropic",
                "models": ["m"],
            },
            local.as_backend("gpu"),
        ]
    )
    url = await served(create_app(settings, with_agent=False))
    c = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    r = await c.chat.completions.with_raw_response.create(model="m", messages=HI)
    assert r.headers["x-backend"] == "gpu"


# --------------------------------------------------------------------------- unit: shapes


def test_request_shape_follows_the_messages_api():
    body = anthropic_request(
        {
            "model": "claude-x",
            "messages": [
                {"role": "system", "content": "S1"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [tool_call("f", "{", id="t1")],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "r1"},
                {"role": "user", "content": "next"},
            ],
            "stop": "END",
            "parallel_tool_calls": False,
            "tools": [WEATHER],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": {"type": "object"}},
            },
        }
    )
    assert body["system"] == "S1" and body["max_tokens"] == 4096
    assert body["stop_sequences"] == ["END"]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert body["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]  # alternating
    image = body["messages"][0]["content"][1]
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": "AAA"}
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"_raw": "{"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
        {"type": "text", "text": "next"},
    ]


def test_reply_shape_with_thinking_and_cache_usage():
    out = openai_completion(
        {
            "id": "msg_1",
            "type": "message",
            "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "hmm"},
                {"type": "text", "text": "Done."},
            ],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 3, "cache_read_input_tokens": 10, "output_tokens": 4},
        }
    )
    choice = out["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Done.",
        "reasoning_content": "hmm",
    }
    assert choice["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 13, "completion_tokens": 4, "total_tokens": 17}


def test_stream_events_translate_and_an_error_event_raises():
    s = AnthropicStream(None, "claude")  # type: ignore[arg-type]
    tool_block = {"type": "tool_use", "id": "t", "name": "f"}
    events = [
        {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 5}}},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_start", "index": 1, "content_block": tool_block},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in s._translate(e)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0]["function"] == {"name": "f", "arguments": ""}
    assert deltas[3]["tool_calls"][0] == {"index": 0, "function": {"arguments": "{}"}}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    with pytest.raises(Exception, match="overloaded"):
        s._translate(
            {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}
        )


async def test_an_agent_run_on_a_messages_api_backend(backends, served, make_settings, tmp_path):
    """The agent streams through the Anthropic adapter: native tool calls, then an answer."""
    from conftest import run_events
    from local_ai_router.agent.runner import RunRequest

    (tmp_path / "notes.txt").write_text("the answer is 42\n")
    local = await backends(
        Reply(tool_calls=[tool_call("read_file", {"path": "notes.txt"})]),
        Reply(tool_calls=[tool_call("task_complete", {"answer": "42"})]),
        models=["qwen"],
    )
    url_b = await served(
        create_app(make_settings(backends=[local.as_backend("gpu")]), with_agent=False)
    )
    settings = make_settings(
        backends=[{"name": "claude", "url": url_b, "kind": "anthropic", "models": ["qwen"]}],
        agent={"workspace": str(tmp_path), "model": "qwen"},
    )
    events = await run_events(settings, RunRequest(task="What is the answer?", workspace=tmp_path))
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["ok"] and "the answer is 42" in result["output"]
    assert events[-1]["status"] == "completed" and events[-1]["final_answer"] == "42"
    assert local.requests[1]["messages"][-1]["role"] == "tool"  # the result went back as a tool


_KEYS = ["type", "text", "content", "input", "name", "id", "delta", "choices", "index", "usage"]
_KEYS += ["message", "content_block", "partial_json", "stop_reason", "tool_calls", "function"]
_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(data=st.dictionaries(st.sampled_from(_KEYS), _junk, max_size=6))
def test_malformed_replies_and_events_never_crash_the_translators(data):
    """What a server sends is untrusted: any JSON object translates, or is a clean error."""
    json.dumps(openai_completion(data))
    json.dumps(message_from_openai(data, "m"))
    t = StreamTranslator("m")
    assert t.start() and t.finish()
    t.feed(json.dumps(data).encode())
    try:
        AnthropicStream(None, "b")._translate(data)  # type: ignore[arg-type]
    except BackendUnavailable as exc:
        assert "stream failed" in str(exc)  # only an upstream ``error`` event raises
