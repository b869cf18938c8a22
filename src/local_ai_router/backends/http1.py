"""A small HTTP/1.1 client for plain ``http://`` model servers: asyncio + httptools.

Why not httpx2 here: per proxied call on loopback it costs about a sixth of httpx2's
CPU (measured with bench/gateway.py: ~80 us against ~620 us), and on a 2-core box that
CPU is taken from the model servers. One keep-alive pool per backend, one write per
request, httptools (llhttp, in C) parsing. It raises httpx2's exception types so the
adapter handles both clients alike; :class:`HttpxReply` wraps httpx2 for everything else
(https, proxies, injected test transports).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx2

try:  # uvicorn[standard] brings it; without it every backend uses httpx2
    import httptools
except ImportError:  # pragma: no cover
    httptools = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ..config import BackendConfig

__all__ = ["Conn", "FastPool", "HttpxReply", "Reply"]


class HttpxReply:
    """A streamed ``httpx2.Response`` (proxies, TLS, injected test transports)."""

    def __init__(self, response: httpx2.Response):
        self._r = response
        self.status: int = response.status_code
        self.content_type = response.headers.get("content-type", "")

    async def read(self) -> bytes:
        return await self._r.aread()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._r.aiter_bytes()

    async def aclose(self) -> None:
        await self._r.aclose()


MAX_BUFFERED = 1 << 20  # stop reading the socket beyond this (backpressure)


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, parsed by httptools (llhttp, in C).

    Per request it costs about a sixth of httpx2's CPU on loopback (bench/gateway.py): one
    write per request (head and body together), no anyio, no per-request objects beyond
    this one. It is also the reply (``Reply``) of the request it carries.
    """

    def __init__(self, pool: FastPool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.busy = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self.begin()

    def begin(self) -> None:
        self.status, self.content_type, self.headers_done, self.done = 0, "", False, False
        self.keep_alive, self.got_bytes, self.exc = False, False, None
        self._body: list[bytes] = []
        self._buffered, self._info, self._framed = 0, False, False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for: the connection is unusable
            self.exc = httpx2.RemoteProtocolError("unexpected data on an idle connection")
            self._close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.exc = httpx2.RemoteProtocolError(f"invalid HTTP response: {exc}")
            self._close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.headers_done and not self.done and not self._framed:
            self.done = True  # a body delimited by the end of the connection
        elif not self.done and self.exc is None:
            self.exc = httpx2.ReadError(str(exc) if exc else "the server closed the connection")
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"content-type":
            self.content_type = value.decode("latin-1")
        elif lname in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._info = 100 <= status < 200  # 1xx: another head follows
        if not self._info:
            self.status, self.headers_done = status, True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > MAX_BUFFERED and self.transport is not None:
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._info:
            self._info, self._framed = False, False
            return
        self.done, self.keep_alive = True, self.parser.should_keep_alive()

    # waiting
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def _wait(self, timeout: float) -> None:
        """Until the next bytes (or the end) arrive; ``timeout`` as httpx2's read timeout."""
        if self.exc is not None:
            raise self.exc
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # A bare timer: asyncio.timeout() costs a few us more per wait.
        timer = loop.call_later(timeout, _expire, waiter, timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def head(self) -> None:
        while not self.headers_done:
            await self._wait(self.pool.read_timeout)

    def _take(self) -> list[bytes]:
        body, self._body = self._body, []
        if self._buffered > MAX_BUFFERED and self.transport is not None and not self.lost:
            self.transport.resume_reading()
        self._buffered = 0
        return body

    # the reply
    async def read(self) -> bytes:
        parts: list[bytes] = []
        while not self.done:
            parts += self._take()  # keeps reading past the backpressure mark
            await self._wait(self.pool.read_timeout)
        return b"".join(parts + self._take())

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._body:
                for chunk in self._take():
                    yield chunk
            elif self.done:
                return
            else:
                await self._wait(self.pool.read_timeout)

    async def aclose(self) -> None:
        self.pool.release(self)


Reply = HttpxReply | Conn  # an upstream reply whose head has arrived


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx2.ReadTimeout(f"no reply within {timeout:g}s"))


class FastPool:
    """Idle keep-alive connections to one plain-HTTP upstream, and the request head.

    Used for ``http://`` backends when no transport is injected and no proxy is set in
    the environment; everything else (TLS, proxies, tests' MockTransport) goes to httpx2.
    """

    KEEPALIVE_S = 5.0  # as httpx2: drop connections idle for longer than this

    def __init__(self, url: str, path: str, headers: dict[str, str], config: BackendConfig):
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        host = parts.netloc.rpartition("@")[2]
        lines = [f"POST {parts.path}{path} HTTP/1.1", f"Host: {host}", "Accept: */*"]
        lines += [f"{k.title()}: {v}" for k, v in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.connect_timeout = config.connect_timeout_s
        self.read_timeout = config.timeout_s
        self.max_idle = max(config.max_concurrent * 2, 8)
        self.idle: list[Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def applies(cls, url: str, transport: object) -> bool:
        if transport is not None or httptools is None:
            return False
        if any(os.environ.get(k) for k in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
            return False
        parts = urlsplit(url)
        return (
            parts.scheme == "http"
            and bool(parts.hostname)
            and not (parts.query or parts.fragment or parts.username or parts.password)
        )

    async def request(self, body: bytes) -> Conn:
        """Send one request; return its connection once the response head has arrived."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them
            self.close_idle()
            self._loop = loop
        data = self.head + b"%d\r\n\r\n" % len(body) + body
        conn = self._reuse(loop.time())
        if conn is not None:
            try:
                return await self._send(conn, data)
            except httpx2.ReadError:
                # The server closed the idle connection as we sent (it answered nothing):
                # once more on a new connection.
                if conn.got_bytes:
                    raise
        return await self._send(await self._connect(loop), data)

    async def _send(self, conn: Conn, data: bytes) -> Conn:
        conn.begin()
        conn.busy = True
        assert conn.transport is not None
        try:
            conn.transport.write(data)
            await conn.head()
        except BaseException:
            conn.busy = False
            conn._close()
            raise
        return conn

    def _reuse(self, now: float) -> Conn | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost and now - conn.idle_since < self.KEEPALIVE_S:
                return conn
            conn._close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> Conn:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: Conn(self), self.host, self.port)
        except TimeoutError:
            raise httpx2.ConnectTimeout(
                f"connect timed out after {self.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from None
        return conn

    def release(self, conn: Conn) -> None:
        """Back to the pool when the response was read to its end, else closed (which is
        also how an abandoned stream stops the upstream's generation)."""
        if not conn.busy:
            return
        conn.busy = False
        reusable = conn.done and conn.keep_alive and not conn.lost and conn.exc is None
        if reusable and len(self.idle) < self.max_idle:
            conn.idle_since = asyncio.get_running_loop().time()
            self.idle.append(conn)
        else:
            conn._close()

    def close_idle(self) -> None:
        for conn in self.idle:
            conn._close()
        self.idle.clear()
