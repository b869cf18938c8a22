"""Serve an ASGI app on a free loopback port inside the current event loop.

Used by tests and benchmarks to run the real gateway (lifespan included)
exactly as ``lar serve`` does, without a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

__all__ = ["serve_app", "serve_app_in_thread"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield  # the host process owns its signals


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Yield ``http://host:port`` while ``app`` is served; its lifespan runs on entry and exit."""
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    # IPPROTO_TCP explicitly: asyncio enables TCP_NODELAY only when the socket says so,
    # and without it every small response waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="loopback-app")
    while not server.started:
        if task.done():
            sock.close()
            exc = task.exception()
            raise RuntimeError(f"app failed to start: {exc!r}") from exc
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.contextmanager
def serve_app_in_thread(app: Any, *, timeout: float = 30.0) -> Iterator[str]:
    """:func:`serve_app` on its own event loop in a thread, for synchronous callers."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="loopback-app", daemon=True)
    thread.start()
    cm = serve_app(app)
    try:
        yield asyncio.run_coroutine_threadsafe(cm.__aenter__(), loop).result(timeout)
    finally:
        try:
            asyncio.run_coroutine_threadsafe(cm.__aexit__(None, None, None), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
