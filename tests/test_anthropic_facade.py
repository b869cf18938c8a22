"""POST /v1/messages through the official `anthropic` client: text, tools, streams, errors.

The gateway runs on loopback in front of ScriptedBackends (OpenAI-compatible servers);
what the backend received shows the translation in one direction, what the client
parsed shows the other.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local_ai_router.gateway.anthropic_wire import (
    AnthropicRequestError,
    StreamTranslator,
    message_from_openai,
    openai_request,
)
from local_ai_router.server import create_app
from local_ai_router.testing import Reply, tool_call

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


async def gateway(served, make_settings, *backends: Any, **cfg: Any) -> str:
    settings = make_settings(
        backends=[b.as_backend(f"b{i}") for i, b in enumerate(backends)], **cfg
    )
    return await served(create_app(settings, with_agent=False))


def client(url: str, key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0)


async def test_text_reply_and_what_the_backend_received(backends, served, make_settings):
    b = await backends(
        Reply(content="Paris.", usage={"prompt_tokens": 11, "completion_tokens": 2}), models=["m"]
    )
    url = await gateway(served, make_settings, b)
    raw = await client(url).messages.with_raw_response.create(
        model="m",
        max_tokens=64,
        system=[{"type": "text", "text": "Answer in one word."}],
        messages=[{"role": "user", "content": "Capital of France?"}],
        stop_sequences=["\n\n"],
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        extra_body={"temperature": 0.1},  # older clients send it; this SDK has no argument
    )
    msg = await raw.parse()
    assert raw.headers["x-backend"] == "b0" and raw.headers["x-model"] == "m"
    assert [c.type for c in msg.content] == ["text"] and msg.content[0].text == "Paris."
    assert msg.stop_reason == "end_turn" and msg.role == "assistant" and msg.model == "m"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (11, 2)
    sent = b.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (64, 0.1, ["\n\n"])
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }


async def test_tool_use_round_trip(backends, served, make_settings):
    b = await backends(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"}, id="call_7")]),
        Reply(content="It is sunny in Paris."),
        models=["m"],
    )
    url = await gateway(served, make_settings, b)
    c = client(url)
    first = await c.messages.create(
        model="m",
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    use = first.content[-1]
    assert (use.type, use.id, use.name) == ("tool_use", "call_7", "get_weather")
    assert use.input == {"city": "Paris"}
    sent = b.requests[0]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert sent["tool_choice"] == "required"

    second = await c.messages.create(
        model="m",
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [u.model_dump() for u in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"},
                    {"type": "text", "text": "Short answer please."},
                ],
            },
        ],
    )
    assert second.content[0].text == "It is sunny in Paris."
    history = b.requests[1]["messages"]
    assert history[1]["tool_calls"][0]["id"] == "call_7"
    assert json.loads(history[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert history[2] == {"role": "tool", "tool_call_id": "call_7", "content": "sunny, 21 C"}
    assert history[3] == {"role": "user", "content": "Short answer please."}


async def test_streamed_text_and_tool_call(backends, served, make_settings):
    b = await backends(
        Reply(content="one two three", usage={"prompt_tokens": 5, "completion_tokens": 3}),
        Reply(tool_calls=[tool_call("get_weather", {"city": "Oslo"})]),
        models=["m"],
    )
    url = await gateway(served, make_settings, b)
    c = client(url)
    async with c.messages.stream(
        model="m", max_tokens=32, messages=[{"role": "user", "content": "count"}]
    ) as stream:
        pieces = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == "one two three" and len(pieces) > 1
    assert final.content[0].text == "one two three" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3
    assert b.requests[0]["stream"] is True

    async with c.messages.stream(
        model="m", max_tokens=32, tools=[WEATHER], messages=[{"role": "user", "content": "w"}]
    ) as stream:
        kinds = [e.type async for e in stream]
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[-1].name == "get_weather" and final.content[-1].input == {"city": "Oslo"}
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


async def test_errors_arrive_in_anthropic_shape(backends, served, make_settings):
    good = await backends(models=["m"])
    dead = await backends(models=["d"], default=Reply(status=500))
    url = await gateway(served, make_settings, good, dead)
    c = client(url)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.NotFoundError) as nf:
        await c.messages.create(model="nope", max_tokens=8, messages=user)
    assert "nope" in str(nf.value)
    with pytest.raises(anthropic.InternalServerError):
        await c.messages.create(model="d", max_tokens=8, messages=user)
    async with httpx2.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/messages", json={"model": "m", "messages": user})
        assert r.status_code == 400
        assert r.json() == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "invalid request: max_tokens: required (a positive integer)",
            },
        }
        bad_block = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [1]}]}
        r = await http.post("/v1/messages", json=bad_block)
        assert r.status_code == 400 and "messages[0].content[0]" in r.json()["error"]["message"]
        r = await http.post("/v1/messages", content=b"{nope", headers={"content-type": "x"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        counted = await http.post(
            "/v1/messages/count_tokens", json={"model": "m", "messages": user}
        )
        assert counted.status_code == 200 and counted.json()["input_tokens"] >= 1


async def test_api_keys_by_x_api_key_and_aliases(backends, served, make_settings):
    b = await backends(models=["qwen-14b"])
    settings = make_settings(
        backends=[b.as_backend("gpu")],
        aliases={"claude-sonnet-4-5": "qwen-14b"},
        server={"require_api_key": True},
    )
    app = create_app(settings, with_agent=False)
    url = await served(app)
    _, key = await app.state.lar.keys.create("claude-code", ["chat"])
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError):
        await client(url, "lar-wrong").messages.create(
            model="claude-sonnet-4-5", max_tokens=8, messages=user
        )
    msg = await client(url, key).messages.create(
        model="claude-sonnet-4-5", max_tokens=8, messages=user
    )
    assert msg.content[0].text == "ok" and b.requests[-1]["model"] == "qwen-14b"


async def test_a_stream_that_breaks_ends_with_an_error_event(backends, served, make_settings):
    b = await backends(
        Reply(content="a b c d e f g h", fail_after_chunks=3), models=["m"], default="x"
    )
    url = await gateway(served, make_settings, b)
    body = {
        "model": "m",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post("/v1/messages", json=body)
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "error"
    assert "message_stop" not in names


# --------------------------------------------------------------------------- unit: wire


def test_images_errors_and_dropped_fields_translate():
    body = openai_request(
        {
            "model": "m",
            "max_tokens": 10,
            "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 100},
            "metadata": {"user_id": "u"},
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/gif", "data": "R0l"},
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "is_error": True,
                            "content": [{"type": "text", "text": "boom"}],
                        },
                    ],
                }
            ],
        }
    )
    assert set(body) == {"model", "max_tokens", "messages"}
    tool, user = body["messages"]
    assert tool == {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}
    assert user["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/gif;base64,R0l"},
    }


def test_broken_tool_arguments_are_repaired():
    data = {
        "choices": [
            {
                "message": {"tool_calls": [tool_call("f", '{"path": "a.py",')]},
                "finish_reason": "stop",
            }
        ]
    }
    msg = message_from_openai(data, "m")
    assert msg["content"][0]["input"] == {"path": "a.py"} and msg["stop_reason"] == "tool_use"


def _call_chunk(**call: Any) -> bytes:
    return json.dumps({"choices": [{"delta": {"tool_calls": [{"index": 0, **call}]}}]}).encode()


def test_stream_translator_skips_garbage_and_orders_blocks():
    t = StreamTranslator("m")
    out = t.start()
    for chunk in (
        b"not json",
        b"[1]",
        json.dumps({"choices": [{"delta": {"content": "Let me look."}}]}).encode(),
        _call_chunk(id="c1", function={"name": "f", "arguments": '{"a": '}),
        _call_chunk(function={"arguments": "1}"}),
        json.dumps({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}).encode(),
    ):
        out += t.feed(chunk)
    out += t.finish()
    events = [
        json.loads(line[6:]) for line in out.decode().splitlines() if line.startswith("data: ")
    ]
    kinds = [(e["type"], e.get("index")) for e in events]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=1000, deadline=None)
@given(
    messages=st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "x"]), "content": json_values}
        ),
        max_size=3,
    ),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "system",
                "tools",
                "tool_choice",
                "stop_sequences",
                "stream",
                "output_config",
                "temperature",
                "top_p",
            ]
        ),
        json_values,
        max_size=3,
    ),
)
def test_any_body_translates_or_fails_with_a_named_field(messages, extra):
    try:
        out = openai_request({"model": "m", "max_tokens": 4, "messages": messages, **extra})
    except AnthropicRequestError as exc:
        assert str(exc)
    else:
        assert out["messages"] is not None and json.dumps(out)
