"""Gateway routing through the official openai client against ScriptedBackend servers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import openai
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from local_ai_router.server import create_app
from local_ai_router.testing import Reply, tool_call

Msgs = list[dict[str, Any]]
HI: Msgs = [{"role": "user", "content": "hi"}]


async def gateway(served: Any, make_settings: Any, **tree: Any) -> tuple[str, openai.AsyncOpenAI]:
    url = await served(create_app(make_settings(**tree), with_agent=False))
    return url, openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


async def test_chat_and_stream_through_openai_client(backends, served, make_settings):
    b = await backends("hello there", "streamed reply", models=["m1"])
    _, client = await gateway(served, make_settings, backends=[b.as_backend("one")])
    raw = await client.chat.completions.with_raw_response.create(model="m1", messages=HI)
    reply = raw.parse()
    assert reply.choices[0].message.content == "hello there"
    assert raw.headers["x-backend"] == "one" and raw.headers["x-model"] == "m1"
    stream = await client.chat.completions.create(model="m1", messages=HI, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "streamed reply"
    assert b.requests[1]["stream"] is True


async def test_tool_calls_pass_through(backends, served, make_settings):
    call = tool_call("read_file", {"path": "a.py"})
    b = await backends(Reply(tool_calls=[call]), models=["m1"])
    _, client = await gateway(served, make_settings, backends=[b.as_backend("one")])
    tools = [
        {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
    ]
    r = await client.chat.completions.create(model="m1", messages=HI, tools=tools)
    assert r.choices[0].message.tool_calls[0].function.name == "read_file"
    assert b.requests[0]["tools"] == tools


async def test_explicit_backend_by_header_and_prefix(backends, served, make_settings):
    a = await backends(models=["shared"])
    b = await backends(models=["shared"])
    _, client = await gateway(
        served,
        make_settings,
        backends=[a.as_backend("a", priority=1), b.as_backend("b", priority=2)],
    )
    await client.chat.completions.create(
        model="shared", messages=HI, extra_headers={"X-Backend": "b"}
    )
    await client.chat.completions.create(model="b/shared", messages=HI)
    await client.chat.completions.create(model="shared", messages=HI)
    assert len(b.requests) == 2 and len(a.requests) == 1
    assert b.requests[1]["model"] == "shared"
    with pytest.raises(openai.BadRequestError, match="unknown backend 'zzz'"):
        await client.chat.completions.create(
            model="shared", messages=HI, extra_headers={"X-Backend": "zzz"}
        )


async def test_model_name_routes_to_serving_backend_and_unknown_is_404(
    backends, served, make_settings
):
    a = await backends(models=["qwen-7b"])
    b = await backends(models=["qwen-14b"])
    _, client = await gateway(
        served, make_settings, backends=[a.as_backend("a"), b.as_backend("b")]
    )
    r = await client.chat.completions.with_raw_response.create(model="qwen-14b", messages=HI)
    assert r.headers["x-backend"] == "b"
    with pytest.raises(openai.NotFoundError, match="not served by any backend"):
        await client.chat.completions.create(model="nope", messages=HI)


async def test_aliases_auto_by_size_and_force_big(backends, served, make_settings):
    small = await backends(models=["qwen-7b"])
    big = await backends(models=["qwen-14b"])
    _, client = await gateway(
        served,
        make_settings,
        backends=[small.as_backend("small-gpu"), big.as_backend("big-gpu")],
        aliases={"small": "qwen-7b", "big": "qwen-14b", "fast": "qwen-7b", "auto": "auto"},
        routing={"small_token_threshold": 100},
    )

    async def where(model: str, messages: Msgs, **kw: Any) -> str:
        r = await client.chat.completions.with_raw_response.create(
            model=model, messages=messages, **kw
        )
        return r.headers["x-backend"]

    assert await where("fast", HI) == "small-gpu"
    assert await where("auto", HI) == "small-gpu"
    long_msgs = [{"role": "user", "content": "word " * 200}]  # ~250 tokens > 100
    assert await where("auto", long_msgs) == "big-gpu"
    assert await where("auto", HI, extra_headers={"X-Force-Big": "true"}) == "big-gpu"
    # Tool schemas count toward the estimate: a short prompt with big tools goes big.
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"t{i}",
                "description": "x" * 100,
                "parameters": {"type": "object"},
            },
        }
        for i in range(5)
    ]
    assert await where("auto", HI, tools=tools) == "big-gpu"
    assert big.requests[0]["model"] == "qwen-14b"


async def test_availability_signal_skips_busy_backends(backends, served, make_settings):
    status = {"gaming_mode": True}

    async def status_endpoint(_: Any) -> JSONResponse:
        return JSONResponse(status)

    status_url = await served(Starlette(routes=[Route("/status", status_endpoint)]))
    small = await backends(models=["qwen-7b"])
    big = await backends(models=["qwen-14b"])
    url, client = await gateway(
        served,
        make_settings,
        backends=[small.as_backend("small-gpu"), big.as_backend("gaming-pc")],
        aliases={"small": "qwen-7b", "big": "qwen-14b", "auto": "auto"},
        routing={
            "availability_url": f"{status_url}/status",
            "availability_backends": ["gaming-pc"],
            "availability_interval_s": 0.05,
        },
    )
    r = await client.chat.completions.with_raw_response.create(
        model="auto", messages=HI, extra_headers={"X-Force-Big": "true"}
    )
    assert r.headers["x-backend"] == "small-gpu"  # big is busy: fell back to small
    async with httpx2.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).json()["availability"]["busy"] is True
        status["gaming_mode"] = False
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not (await http.get("/health")).json()["availability"]["busy"]:
                break
    r = await client.chat.completions.with_raw_response.create(
        model="auto", messages=HI, extra_headers={"X-Force-Big": "true"}
    )
    assert r.headers["x-backend"] == "gaming-pc"


async def test_drain_and_undrain(backends, served, make_settings):
    a = await backends(models=["m"])
    b = await backends(models=["m"])
    url, client = await gateway(
        served,
        make_settings,
        backends=[a.as_backend("a", priority=1), b.as_backend("b", priority=2)],
    )
    async with httpx2.AsyncClient(base_url=url) as http:
        assert (await http.post("/admin/backends/a/drain")).json()["drained"] is True
        r = await client.chat.completions.with_raw_response.create(model="m", messages=HI)
        assert r.headers["x-backend"] == "b"
        await http.post("/admin/backends/a/undrain")
        r = await client.chat.completions.with_raw_response.create(model="m", messages=HI)
        assert r.headers["x-backend"] == "a"
        missing = await http.post("/admin/backends/nope/drain")
        assert (
            missing.status_code == 404 and "unknown backend" in missing.json()["error"]["message"]
        )


async def test_priority_then_overflow_to_next_backend(backends, served, make_settings):
    a = await backends(default=Reply(content="slow", delay=0.3), models=["m"])
    b = await backends(models=["m"])
    _, client = await gateway(
        served,
        make_settings,
        backends=[
            a.as_backend("a", priority=1, max_concurrent=1),
            b.as_backend("b", priority=2),
        ],
    )
    results = await asyncio.gather(
        *[
            client.chat.completions.with_raw_response.create(model="m", messages=HI)
            for _ in range(2)
        ]
    )
    assert sorted(r.headers["x-backend"] for r in results) == ["a", "b"]


async def test_full_queue_answers_429_with_retry_after(backends, served, make_settings):
    a = await backends(default=Reply(content="slow", delay=0.6), models=["m"])
    url, _ = await gateway(
        served,
        make_settings,
        backends=[a.as_backend("a", max_concurrent=1)],
        routing={"queue_max_depth": 1, "queue_timeout_s": 30},
    )
    body = {"model": "m", "messages": HI}
    async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
        rs = await asyncio.gather(*[http.post("/v1/chat/completions", json=body) for _ in range(3)])
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 429]
    limited = next(r for r in rs if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "queue_full"
    assert a.max_active == 1


async def test_queue_timeout_is_429(backends, served, make_settings):
    a = await backends(default=Reply(content="slow", delay=1.0), models=["m"])
    url, _ = await gateway(
        served,
        make_settings,
        backends=[a.as_backend("a", max_concurrent=1)],
        routing={"queue_max_depth": 5, "queue_timeout_s": 0.2},
    )
    body = {"model": "m", "messages": HI}
    async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
        rs = await asyncio.gather(*[http.post("/v1/chat/completions", json=body) for _ in range(2)])
    assert sorted(r.status_code for r in rs) == [200, 429]
    assert "waited" in next(r for r in rs if r.status_code == 429).json()["error"]["message"]


async def test_context_gate_prefers_larger_window_or_400(backends, served, make_settings):
    small = await backends(models=["m"], context_window=300)
    big = await backends(models=["m"], context_window=4000)
    _, client = await gateway(
        served,
        make_settings,
        backends=[small.as_backend("small", priority=1), big.as_backend("big", priority=2)],
    )
    r = await client.chat.completions.with_raw_response.create(
        model="m", messages=HI, max_tokens=50
    )
    assert r.headers["x-backend"] == "small"
    long_msgs = [{"role": "user", "content": "x" * 2000}]  # ~500 tokens
    r = await client.chat.completions.with_raw_response.create(
        model="m", messages=long_msgs, max_tokens=50
    )
    assert r.headers["x-backend"] == "big"  # discovered max_model_len 300 is too small
    with pytest.raises(openai.BadRequestError, match="largest available context window is 4000"):
        await client.chat.completions.create(model="m", messages=long_msgs, max_tokens=3900)
    assert small.rejected == 0 and big.rejected == 0


async def test_fallback_on_dead_backend_and_5xx(backends, served, make_settings):
    dead = await backends(models=["m"])
    dead_url = dead.url
    await dead.stop()
    failing = await backends(Reply(status=503, error_message="overloaded"), models=["m"])
    good = await backends("from good", models=["m"])
    _, client = await gateway(
        served,
        make_settings,
        backends=[
            {"name": "dead", "url": dead_url, "models": ["m"], "priority": 1},
            failing.as_backend("failing", priority=2),
            good.as_backend("good", priority=3),
        ],
    )
    r = await client.chat.completions.with_raw_response.create(model="m", messages=HI)
    assert r.parse().choices[0].message.content == "from good"
    assert r.headers["x-backend"] == "good"
    assert len(failing.requests) == 1


async def test_4xx_from_backend_is_not_retried(backends, served, make_settings):
    a = await backends(Reply(status=400, error_message="bad temperature"), models=["m"])
    b = await backends(models=["m"])
    _, client = await gateway(
        served,
        make_settings,
        backends=[a.as_backend("a", priority=1), b.as_backend("b", priority=2)],
    )
    with pytest.raises(openai.BadRequestError, match="bad temperature"):
        await client.chat.completions.create(model="m", messages=HI)
    assert b.requests == []


async def test_stream_fallback_before_first_byte(backends, served, make_settings):
    a = await backends(Reply(content="never", fail_after_chunks=0), models=["m"])
    b = await backends("second wins", models=["m"])
    _, client = await gateway(
        served,
        make_settings,
        backends=[a.as_backend("a", priority=1), b.as_backend("b", priority=2)],
    )
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "second wins"


async def test_mid_stream_failure_ends_with_error_chunk_then_done(backends, served, make_settings):
    a = await backends(
        Reply(content="one two three four five six", fail_after_chunks=3), models=["m"]
    )
    url, _ = await gateway(served, make_settings, backends=[a.as_backend("a")])
    async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.post(
            "/v1/chat/completions", json={"model": "m", "messages": HI, "stream": True}
        )
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert '"error"' in events[-2] and "failed mid-way" in events[-2]
    assert len(events) >= 3  # some real chunks went out first


async def test_client_disconnect_cancels_upstream(backends, served, make_settings):
    a = await backends(Reply(content=" ".join(["tok"] * 40), chunk_delay=0.05), models=["m"])
    url, _ = await gateway(served, make_settings, backends=[a.as_backend("a")])
    async with (
        httpx2.AsyncClient(base_url=url, timeout=10) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"model": "m", "messages": HI, "stream": True}
        ) as r,
    ):
        async for _ in r.aiter_lines():
            break  # leave after the first line
    for _ in range(100):
        if a.cancelled:
            break
        await asyncio.sleep(0.05)
    assert a.cancelled == 1
    async with httpx2.AsyncClient(base_url=url) as http:
        snap = (await http.get("/admin/backends")).json()["backends"][0]
    assert snap["in_flight"] == 0  # the slot was released
