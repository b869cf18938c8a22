"""Gateway operations against ScriptedBackend servers: health, discovery, API keys, metrics,
the request log and conversation memory (the real app on loopback, the official client)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from local_ai_router.gateway.keys import KeyStore
from local_ai_router.server import create_app
from local_ai_router.store.db import Database
from local_ai_router.store.schema import api_keys, request_log
from local_ai_router.testing import Reply

HI: list[Any] = [{"role": "user", "content": "hi"}]


async def start(served: Any, make_settings: Any, *, agent: bool = False, **tree: Any) -> Any:
    """The app (for its Runtime at ``app.state.lar``) and an HTTP client on it."""
    app = create_app(make_settings(**tree), with_agent=agent)
    url = await served(app)
    return app, httpx2.AsyncClient(base_url=url, timeout=10)


def client(http: httpx2.AsyncClient, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(http.base_url).rstrip("/") + "/v1", api_key=key, max_retries=0
    )


async def until(check: Callable[[], Awaitable[bool]], what: str, tries: int = 200) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- health


async def test_failed_checks_mark_unhealthy_and_one_success_restores(
    backends, served, make_settings
):
    b = await backends(models=["m"])
    app, http = await start(
        served, make_settings, backends=[b.as_backend("a")], health={"failures_to_unhealthy": 3}
    )
    gw = app.state.lar.gateway
    st = gw.router.state("a")
    b.healthy = False
    for _ in range(2):
        assert await gw.health.check(st) is False
        assert st.healthy  # fewer than 3 failures in a row: still in service
    assert await gw.health.check(st) is False
    assert st.healthy is False
    health = (await http.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["backends"]["a"] == {"healthy": False, "drained": False, "in_flight": 0}
    snap = (await http.get("/admin/backends")).json()["backends"][0]
    assert snap["consecutive_failures"] == 3 and snap["last_error"] == "health check failed"
    r = await http.post("/v1/chat/completions", json={"model": "m", "messages": HI})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "no_healthy_backend"
    assert "a (unhealthy: health check failed)" in err["message"]
    assert b.requests == []  # skipped, not tried
    b.healthy = True
    assert await gw.health.check(st) is True and st.healthy
    r = await http.post("/v1/chat/completions", json={"model": "m", "messages": HI})
    assert r.status_code == 200 and r.headers["x-backend"] == "a"
    assert (await http.get("/health")).json()["status"] == "ok"


async def test_background_checks_take_out_and_restore_a_backend(backends, served, make_settings):
    b = await backends(models=["m"])
    _, http = await start(
        served,
        make_settings,
        backends=[b.as_backend("a")],
        health={"interval_s": 0.05, "failures_to_unhealthy": 2, "timeout_s": 1},
    )

    async def healthy() -> bool:
        return (await http.get("/health")).json()["backends"]["a"]["healthy"]

    b.healthy = False
    await until(lambda: _not(healthy()), "the backend to be marked unhealthy")
    r = await http.post("/v1/chat/completions", json={"model": "m", "messages": HI})
    assert r.status_code == 503 and "no healthy backend" in r.json()["error"]["message"]
    b.healthy = True
    await until(healthy, "the backend to be restored")
    r = await http.post("/v1/chat/completions", json={"model": "m", "messages": HI})
    assert r.status_code == 200


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_health_and_admin_backends_shapes(backends, served, make_settings):
    a = await backends(models=["m"], context_window=4096)
    c = await backends(models=["n"])
    _, http = await start(
        served,
        make_settings,
        backends=[a.as_backend("a", max_concurrent=2), c.as_backend("c", priority=5)],
    )
    await http.post("/admin/backends/c/drain")
    health = (await http.get("/health")).json()
    assert health == {
        "status": "ok",
        "backends": {
            "a": {"healthy": True, "drained": False, "in_flight": 0},
            "c": {"healthy": True, "drained": True, "in_flight": 0},
        },
        "availability": None,
        "queue_depth": 0,
    }
    admin = (await http.get("/admin/backends")).json()
    a_snap = admin["backends"][0]
    assert a_snap["name"] == "a" and a_snap["url"] == a.url and a_snap["kind"] == "vllm"
    assert a_snap["max_concurrent"] == 2 and a_snap["priority"] == 1
    assert a_snap["models"] == ["m"] and a_snap["context_windows"] == {"m": 4096}
    assert a_snap["last_check"] is not None and a_snap["consecutive_failures"] == 0
    assert admin["backends"][1]["drained"] is True and admin["queue_depth"] == 0


async def test_models_discovered_when_not_configured(backends, served, make_settings):
    b = await backends(models=["disc-a", "disc-b"], context_window=8192)
    _, http = await start(
        served,
        make_settings,
        backends=[{"name": "gpu", "url": b.url, "kind": "vllm", "models": []}],
        aliases={"small": "disc-a", "auto": "auto"},
    )
    listed = (await http.get("/v1/models")).json()["data"]
    owned = {m["id"]: m["owned_by"] for m in listed}
    assert owned["disc-a"] == "gpu" and owned["disc-b"] == "gpu" and owned["small"] == "alias"
    snap = (await http.get("/admin/backends")).json()["backends"][0]
    assert snap["context_windows"] == {"disc-a": 8192, "disc-b": 8192}
    r = await client(http).chat.completions.with_raw_response.create(model="disc-b", messages=HI)
    assert r.headers["x-backend"] == "gpu" and b.requests[0]["model"] == "disc-b"


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [("vllm", "/v1/models"), ("llamacpp", "/props"), ("ollama", "/api/show")],
)
async def test_context_window_discovery_per_kind(
    backends, served, make_settings, kind: str, endpoint: str
):
    b = await backends(models=["x"], context_window=3000, kind=kind)
    configured = await backends(models=["x"], context_window=3000, kind=kind)
    _, http = await start(
        served,
        make_settings,
        backends=[
            b.as_backend("found"),
            configured.as_backend("set", context_window=1000, priority=9),
        ],
    )
    snaps = {s["name"]: s for s in (await http.get("/admin/backends")).json()["backends"]}
    assert snaps["found"]["context_windows"] == {"x": 3000}
    assert b.hits.get(endpoint, 0) >= 1
    assert snaps["set"]["context_windows"] == {"x": 1000}  # the config overrides the server
    assert configured.hits.get(endpoint, 0) == (1 if kind == "vllm" else 0)  # health only
    # The gate uses the configured window: 1500 tokens fit "found" (3000) but not "set".
    body = {"model": "x", "messages": HI, "max_tokens": 1500}
    r = await http.post("/v1/chat/completions", json=body, headers={"X-Backend": "set"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = await http.post("/v1/chat/completions", json=body, headers={"X-Backend": "found"})
    assert r.status_code == 200


# --------------------------------------------------------------------------- API keys


async def test_api_keys_scopes_and_states(backends, served, make_settings, lar_home: Path):
    b = await backends(models=["m"])
    app, http = await start(
        served,
        make_settings,
        agent=True,
        backends=[b.as_backend("a")],
        server={"require_api_key": True},
    )
    keys: KeyStore = app.state.lar.keys
    _, chat = await keys.create("chat", ["chat"])
    _, agent = await keys.create("agent", ["agent"])
    _, admin = await keys.create("ops", ["admin"])
    disabled_key, disabled = await keys.create("old", ["chat"])
    expiring_key, expiring = await keys.create("temp", ["chat"], expires_in_s=0.2)
    await keys.set_disabled(disabled_key.id, True)

    async def status(method: str, path: str, key: str | None = None, **kw: Any) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return (await http.request(method, path, headers=headers, **kw)).status_code

    chat_body = {"json": {"model": "m", "messages": HI}}
    r = await http.post("/v1/chat/completions", **chat_body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = await http.post(
        "/v1/chat/completions", headers={"Authorization": "Bearer lar-x"}, **chat_body
    )
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert await status("POST", "/v1/chat/completions", disabled, **chat_body) == 401
    assert await status("POST", "/v1/chat/completions", expiring, **chat_body) == 200
    await asyncio.sleep((expiring_key.expires_at or 0) - time.time() + 0.05)
    assert await status("POST", "/v1/chat/completions", expiring, **chat_body) == 401

    # The official client sends the key as a bearer token; X-Api-Key works too.
    reply = await client(http, chat).chat.completions.create(model="m", messages=HI)
    assert reply.choices[0].message.content == "ok"
    r = await http.post("/v1/chat/completions", headers={"X-Api-Key": chat}, **chat_body)
    assert r.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        await client(http, "lar-wrong").chat.completions.create(model="m", messages=HI)

    r = await http.post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {agent}"}, **chat_body
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    scoped = {
        ("GET", "/metrics"): {chat: 403, agent: 403, admin: 200},
        ("GET", "/admin/backends"): {chat: 403, agent: 403, admin: 200},
        ("POST", "/admin/backends/a/drain"): {chat: 403, agent: 403},
        ("GET", "/agent/tools"): {chat: 403, agent: 200, admin: 200},
        ("GET", "/agent/runs"): {chat: 403, agent: 200},
        ("GET", "/v1/models"): {chat: 200, agent: 403},
        ("GET", "/memory/conversations"): {agent: 403},
    }
    for (method, path), expected in scoped.items():
        got = {k: await status(method, path, k) for k in expected}
        assert got == expected, (method, path)
        assert await status(method, path) == 401, (method, path)
    assert await status("GET", "/health") == 200  # liveness stays open
    await keys.set_disabled(disabled_key.id, False)
    assert await status("POST", "/v1/chat/completions", disabled, **chat_body) == 200

    # Each key records when it was last used; one never presented has no date.
    used = {k.name: k.last_used_at for k in await keys.list()}
    assert used["chat"] and used["agent"] and used["ops"] and used["temp"]
    assert used["chat"] <= time.time() and used["old"] is not None  # used once re-enabled
    never, _ = await keys.create("never", ["chat"])
    assert (await keys.find(never.id)).last_used_at is None

    # Only hashes are stored: no file under the data directory holds a plaintext key.
    async with app.state.lar.db.engine.connect() as conn:
        rows = (await conn.execute(select(api_keys.c.key_hash, api_keys.c.prefix))).all()
    assert hashlib.sha256(chat.encode()).hexdigest() in {r.key_hash for r in rows}
    blobs = [p.read_bytes() for p in lar_home.rglob("*") if p.is_file()]
    assert blobs and not any(k.encode() in blob for k in (chat, agent, admin) for blob in blobs)


async def test_disable_from_another_process_applies_within_the_cache_ttl(lar_home: Path):
    """The server caches verified keys for ``cache_ttl_s`` (5 s by default), so a key disabled
    by ``lar keys disable`` (another process, another KeyStore) may work until it lapses."""
    db = await Database(f"sqlite+aiosqlite:///{lar_home}/keys.db").open()
    try:
        server_side = KeyStore(db, cache_ttl_s=60)
        uncached = KeyStore(db, cache_ttl_s=0)
        key, plaintext = await KeyStore(db).create("k", ["chat"])
        verified = await server_side.verify(plaintext)
        assert verified is not None and verified.id == key.id and verified.last_used_at
        await KeyStore(db).set_disabled(key.id, True)  # what the CLI does
        assert await uncached.verify(plaintext) is None
        assert (await server_side.verify(plaintext)) is not None  # stale until the TTL lapses
        server_side.cache_ttl_s = 0
        assert await server_side.verify(plaintext) is None
        with pytest.raises(ValueError, match="scope"):
            await uncached.create("bad", ["root"])
        with pytest.raises(ValueError, match="future"):
            await uncached.create("bad", ["chat"], expires_in_s=0)
    finally:
        await db.close()


# --------------------------------------------------------------------------- metrics


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_after_requests(backends, served, make_settings):
    bad = await backends(models=["m"], default=Reply(status=503, error_message="overloaded"))
    good = await backends(
        Reply(content="one", usage={"prompt_tokens": 7, "completion_tokens": 3}),
        Reply(content="two", usage={"prompt_tokens": 11, "completion_tokens": 5}),
        models=["m", "slow"],
    )
    app, http = await start(
        served,
        make_settings,
        backends=[bad.as_backend("bad", priority=1), good.as_backend("good", priority=2)],
    )
    oa = client(http)
    await oa.chat.completions.create(model="m", messages=HI)
    stream = await oa.chat.completions.create(
        model="m", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "two"
    with pytest.raises(openai.NotFoundError):
        await oa.chat.completions.create(model="made-up-name", messages=HI)
    await app.state.lar.gateway.complete({"model": "slow", "messages": HI})  # the agent's path

    good.add(Reply(content="wait", delay=0.5))
    slow = asyncio.create_task(oa.chat.completions.create(model="slow", messages=HI))

    async def active_now() -> bool:
        m = samples((await http.get("/metrics")).text)
        return metric(m, "local_ai_active_requests", provider="good") == 1

    await until(active_now, "the slow request to be in flight")
    await slow
    text = (await http.get("/metrics")).text
    m = samples(text)
    chat_ok = {"endpoint": "chat", "model": "m", "provider": "good", "status": "200"}
    assert metric(m, "local_ai_requests_total", **chat_ok) == 2
    assert metric(m, "local_ai_requests_total", **{**chat_ok, "model": "slow"}) == 1
    unknown = {"endpoint": "chat", "model": "(unknown)", "provider": "none", "status": "404"}
    assert metric(m, "local_ai_requests_total", **unknown) == 1
    assert "made-up-name" not in text  # caller-made names never become label values
    agent = {"endpoint": "agent", "model": "slow", "provider": "good", "status": "200"}
    assert metric(m, "local_ai_requests_total", **agent) == 1
    hist = {"endpoint": "chat", "provider": "good"}
    assert metric(m, "local_ai_request_duration_seconds_count", **hist) == 3
    assert metric(m, "local_ai_request_duration_seconds_bucket", **hist, le="+Inf") == 3
    assert metric(m, "local_ai_request_duration_seconds_bucket", **hist, le="300.0") == 3
    assert metric(m, "local_ai_request_duration_seconds_sum", **hist) > 0.4  # the slow one
    assert metric(m, "local_ai_tokens_total", provider="good", type="prompt") >= 18
    assert metric(m, "local_ai_tokens_total", provider="good", type="completion") >= 8
    assert metric(m, "local_ai_tokens_total", provider="bad", type="prompt") == 0
    assert metric(m, "local_ai_provider_health", provider="good") == 1
    assert metric(m, "local_ai_provider_health", provider="bad") == 1  # 2 failures < 3
    assert metric(m, "local_ai_active_requests", provider="good") == 0
    assert metric(m, "local_ai_active_requests", provider="bad") == 0
    assert metric(m, "local_ai_routing_decisions_total", decision="model", provider="bad") == 2
    assert metric(m, "local_ai_routing_decisions_total", decision="model", provider="good") == 2
    assert metric(m, "local_ai_failover_total", from_provider="bad", to_provider="good") == 2
    assert metric(m, "local_ai_errors_total", type="model_not_found") == 1
    assert len(bad.requests) == 2


# --------------------------------------------------------------------------- request log


async def test_request_log_rows(backends, served, make_settings):
    good = await backends(
        Reply(content="a", usage={"prompt_tokens": 7, "completion_tokens": 3}),
        Reply(content="b c", usage={"prompt_tokens": 9, "completion_tokens": 2}),
        models=["m"],
    )
    dead = await backends(models=["d"], default=Reply(status=500))
    app, http = await start(
        served,
        make_settings,
        backends=[good.as_backend("good"), dead.as_backend("dead")],
        aliases={"small": "m", "auto": "auto"},
        server={"require_api_key": True},
    )
    key, plaintext = await app.state.lar.keys.create("logger", ["chat"])
    oa = client(http, plaintext)
    await oa.chat.completions.create(model="small", messages=HI)
    stream = await oa.chat.completions.create(
        model="m", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    _ = [c async for c in stream]
    with pytest.raises(openai.NotFoundError):
        await oa.chat.completions.create(model="zzz", messages=HI)
    with pytest.raises(openai.InternalServerError):
        await oa.chat.completions.create(model="d", messages=HI)
    engine = app.state.lar.db.engine

    async def rows() -> list[Any]:
        async with engine.connect() as conn:
            return (await conn.execute(select(request_log).order_by(request_log.c.id))).all()

    async def four() -> bool:
        return len(await rows()) == 4

    await until(four, "four request-log rows")
    plain, streamed, unknown, failed = await rows()
    assert (plain.key_id, plain.endpoint, plain.status, plain.stream) == (
        key.id,
        "chat",
        200,
        False,
    )
    assert (plain.model_requested, plain.model_used, plain.backend) == ("small", "m", "good")
    assert (plain.prompt_tokens, plain.completion_tokens) == (7, 3)
    assert plain.duration_ms > 0 and plain.error is None and plain.ts > 0
    assert (streamed.stream, streamed.status, streamed.backend) == (True, 200, "good")
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (9, 2)
    assert (unknown.status, unknown.model_requested, unknown.backend) == (404, "zzz", None)
    assert unknown.error.startswith("model_not_found") and unknown.key_id == key.id
    assert (failed.status, failed.backend, failed.model_used) == (503, None, "d")
    assert "no_healthy_backend" in failed.error and "HTTP 500" in failed.error

    # Bad input is logged too: who sent it, the status, and what was wrong.
    auth = {"Authorization": f"Bearer {plaintext}", "content-type": "application/json"}
    r = await http.post("/v1/chat/completions", headers=auth, content=b'{"model": "m",')
    assert r.status_code == 400
    r = await http.post("/v1/chat/completions", headers=auth, json={"model": "m"})
    assert r.status_code == 400

    async def six() -> bool:
        return len(await rows()) == 6

    await until(six, "six request-log rows")
    broken, incomplete = (await rows())[4:]
    assert (broken.status, broken.key_id, broken.backend) == (400, key.id, None)
    assert broken.error.startswith("invalid_json: request body is not valid JSON")
    assert incomplete.status == 400 and "messages" in incomplete.error


async def test_request_log_stream_endings(backends, served, make_settings):
    b = await backends(
        Reply(content="one two three four five six", fail_after_chunks=3),
        Reply(content=" ".join(["tok"] * 40), chunk_delay=0.05),
        models=["m"],
    )
    app, http = await start(served, make_settings, backends=[b.as_backend("a")])
    body = {"model": "m", "messages": HI, "stream": True}
    broken = await http.post("/v1/chat/completions", json=body)
    assert broken.text.rstrip().endswith("data: [DONE]")
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        async for _ in r.aiter_lines():
            break  # the client leaves early
    engine = app.state.lar.db.engine

    async def rows() -> list[Any]:
        async with engine.connect() as conn:
            return (await conn.execute(select(request_log).order_by(request_log.c.id))).all()

    async def two() -> bool:
        return len(await rows()) == 2

    await until(two, "two request-log rows")
    interrupted, left = await rows()
    assert (interrupted.status, interrupted.stream, interrupted.backend) == (502, True, "a")
    assert interrupted.error.startswith("upstream_error: stream interrupted")
    assert (left.status, left.backend) == (499, "a")
    assert left.error.startswith("client_closed")


# --------------------------------------------------------------------------- memory


async def test_conversation_memory(backends, served, make_settings):
    b = await backends(
        "first reply", "second reply", "streamed words come back whole", models=["m"]
    )
    _, http = await start(served, make_settings, backends=[b.as_backend("a")])
    oa = client(http)
    alice = {"X-Enable-Memory": "true", "X-User-ID": "alice"}
    first = await oa.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "remember kiwi"}], extra_headers=alice
    )
    cid = first.headers["x-conversation-id"]
    assert cid
    second = await oa.chat.completions.with_raw_response.create(
        model="m",
        messages=[{"role": "user", "content": "and mango"}],
        extra_headers={**alice, "X-Conversation-ID": cid},
    )
    assert second.headers["x-conversation-id"] == cid
    stream = await oa.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        extra_headers={**alice, "X-Conversation-ID": cid},
    )
    _ = [c async for c in stream]
    # Without the opt-in nothing is stored and no conversation is made.
    plain = await oa.chat.completions.with_raw_response.create(
        model="m", messages=HI, extra_headers={"X-User-ID": "alice"}
    )
    assert "x-conversation-id" not in plain.headers

    as_alice, as_bob = {"X-User-ID": "alice"}, {"X-User-ID": "bob"}
    convs = (await http.get("/memory/conversations", headers=as_alice)).json()["conversations"]
    assert [(c["id"], c["message_count"]) for c in convs] == [(cid, 6)]
    assert convs[0]["title"] == "remember kiwi"
    assert (await http.get("/memory/conversations", headers=as_bob)).json()["conversations"] == []
    r = await http.get("/memory/conversations")
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_user_id"
    conv = (await http.get(f"/memory/conversations/{cid}", headers=as_alice)).json()
    assert [(m["role"], m["content"]) for m in conv["messages"]] == [
        ("user", "remember kiwi"),
        ("assistant", "first reply"),
        ("user", "and mango"),
        ("assistant", "second reply"),
        ("user", "stream it"),
        ("assistant", "streamed words come back whole"),
    ]
    assert (await http.get(f"/memory/conversations/{cid}", headers=as_bob)).status_code == 404

    # Bob cannot write into Alice's conversation.
    with pytest.raises(openai.PermissionDeniedError):
        await oa.chat.completions.create(
            model="m",
            messages=HI,
            extra_headers={"X-Enable-Memory": "true", "X-User-ID": "bob", "X-Conversation-ID": cid},
        )

    found = (
        await http.post("/memory/search", json={"query": "WORDS whole"}, headers=as_alice)
    ).json()
    assert [(h["conversation_id"], h["role"]) for h in found["results"]] == [(cid, "assistant")]
    r = await http.post("/memory/search", json={"query": "words"}, headers=as_bob)
    assert r.json()["results"] == []
    r = await http.post(
        "/memory/search", json={"query": "words", "user_id": "alice"}, headers=as_bob
    )
    assert r.status_code == 403
    r = await http.post("/memory/search", json={"query": ""}, headers=as_alice)
    assert r.status_code == 400

    assert (await http.delete(f"/memory/conversations/{cid}", headers=as_bob)).status_code == 404
    r = await http.delete(f"/memory/conversations/{cid}", headers=as_alice)
    assert r.status_code == 200 and r.json() == {"deleted": cid}
    assert (await http.get(f"/memory/conversations/{cid}", headers=as_alice)).status_code == 404
