"""The adapter's own HTTP/1.1 client (plain http:// backends) against awkward upstreams:
a raw asyncio server on loopback plays each case."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from local_ai_router.backends.openai_compat import OpenAICompatBackend, RawJSON
from local_ai_router.config import BackendConfig
from local_ai_router.types import BackendHTTPError, BackendUnavailable

REPLY = json.dumps(
    {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}
).encode()
RAW = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


def ok_head(n: int, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n" % (
        extra,
        n,
    )


class Upstream:
    """Answers each request with ``handler``; counts connections and requests."""

    def __init__(self, handler: Handler):
        self.handler, self.conns, self.bodies = handler, 0, []
        self.hung_up = asyncio.Event()  # the client closed a connection mid-reply

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(n)
                self.bodies.append(body)
                if not await self.handler(reader, writer, body):
                    return
                await writer.drain()
        except ConnectionError:
            self.hung_up.set()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[Upstream, Any]]]]:
    servers: list[asyncio.Server] = []
    backends: list[OpenAICompatBackend] = []

    async def make(handler: Handler, timeout: float = 2.0) -> tuple[Upstream, Any]:
        up = Upstream(handler)
        server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        cfg = BackendConfig(
            name="t", url=f"http://127.0.0.1:{port}/v1", models=["m"], timeout_s=timeout
        )
        b = OpenAICompatBackend(cfg)
        assert b._fast is not None  # the plain-http path is the one under test
        backends.append(b)
        return up, b

    yield make
    for b in backends:
        await b.aclose()
    for s in servers:
        s.close()


def body() -> RawJSON:
    return RawJSON(json.loads(RAW), RAW)


async def test_keep_alive_reuse_and_bytes_forwarded(upstream):
    async def h(r, w, b):
        w.write(ok_head(len(REPLY)) + REPLY)
        return True

    up, b = await upstream(h)
    for _ in range(3):
        data = await b.chat(body())
        assert data["choices"][0]["message"]["content"] == "ok" and data.raw == REPLY
    assert up.conns == 1
    assert up.bodies[0] == b'{"stream":false,' + RAW[1:]  # the caller's bytes, flag added


async def test_chunked_close_delimited_and_informational_replies(upstream):
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (REPLY[:9], REPLY[9:]))
        + b"0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok_head(len(REPLY)) + REPLY,
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + REPLY,
    ]

    async def h(r, w, b):
        w.write(replies.pop(0))
        return bool(replies)  # the last one ends with the connection

    _, b = await upstream(h)
    for _ in range(3):
        assert (await b.chat(body()))["choices"][0]["message"]["content"] == "ok"


async def test_idle_connection_closed_under_us_is_retried_once(upstream):
    calls = 0

    async def h(r, w, b):
        nonlocal calls
        calls += 1
        if calls == 2:
            return False  # read the request, then hang up without a word
        w.write(ok_head(len(REPLY)) + REPLY)
        return True

    up, b = await upstream(h)
    await b.chat(body())
    assert (await b.chat(body()))["choices"][0]["message"]["content"] == "ok"
    assert (up.conns, calls) == (2, 3)


@pytest.mark.parametrize(
    ("reply", "word"),
    [(None, "timed out"), (b"SPDY/9 nonsense\r\n\r\n", "is unreachable")],
)
async def test_silence_and_garbage_are_unavailable(upstream, reply: bytes | None, word: str):
    async def h(r, w, b):
        if reply is None:
            await asyncio.sleep(1)
        else:
            w.write(reply)
        return True

    _, b = await upstream(h, timeout=0.2)
    with pytest.raises(BackendUnavailable, match=word):
        await b.chat(body())


async def test_refused_connection_is_unavailable():
    cfg = BackendConfig(name="d", url="http://127.0.0.1:9/v1", models=["m"])
    b = OpenAICompatBackend(cfg)
    with pytest.raises(BackendUnavailable, match="is unreachable"):
        await b.chat(body())
    await b.aclose()


async def test_error_status_and_large_reply(upstream):
    big = json.dumps({"choices": [{"message": {"content": "x" * 3_000_000}}]}).encode()
    replies = [
        b"HTTP/1.1 500 Oops\r\nContent-Length: 28\r\n\r\n" + b'{"error":{"message":"boom"}}',
        ok_head(len(big)) + big,
    ]

    async def h(r, w, b):
        w.write(replies.pop(0))
        return True

    _, b = await upstream(h)
    with pytest.raises(BackendHTTPError, match="boom"):
        await b.chat(body())
    data = await b.chat(body())  # past the backpressure mark: still read to the end
    assert len(data["choices"][0]["message"]["content"]) == 3_000_000


async def test_stream_crlf_events_and_abandoned_stream_hangs_up(upstream):
    async def h(r, w, b):
        if b'"stream":true' not in b:
            return False
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        w.write(b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(1000):
            ev = b'data: {"n":%d}\r\n\r\n' % i
            w.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            await w.drain()
            await asyncio.sleep(0.002)
        return True

    up, b = await upstream(h)
    stream = await b.open_stream({"messages": [{"role": "user", "content": "hi"}], "stream": True})
    events = stream.events().__aiter__()
    assert [json.loads(await events.__anext__())["n"] for _ in range(3)] == [0, 1, 2]
    await stream.aclose()  # the client left: the upstream must see the connection go
    await asyncio.wait_for(up.hung_up.wait(), 2)
