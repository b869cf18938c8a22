"""MCP servers as a tool source, on the official ``mcp`` SDK (2.x).

One :class:`McpServer` per configured server, one :class:`McpManager` per run
(or per ``lar serve``). The SDK's clients are async context managers whose task
groups must be entered and exited in the same task, so each connection lives in
its own long-lived *owner* task that enters the client, lists the tools, then
waits until it is stopped or the connection is lost. Callers use the connected
client from their own tasks (requests are plain messages on streams), so start,
call and stop work from any task and a dying server never throws into them: a
call fails with a :class:`ToolError` and the next call restarts the server.

Tools appear as ``mcp__<server>__<tool>`` :class:`Tool` objects built from the
server's input schema; see :mod:`local_ai_router.mcp_config` for naming, the
argument checker and result rendering.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any, Literal, cast

import anyio
import httpx2
import mcp_types
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED, REQUEST_TIMEOUT
from pydantic import ValidationError

from . import __version__
from .mcp_config import (
    McpServerConfig,
    check_arguments,
    load_mcp_json,
    mcp_tool_name,
    parse_mcp_servers,
    render_result,
    short_description,
    slim_schema,
    with_hash,
)
from .tools.registry import Tool, ToolContext, scrubbed_env, truncate
from .types import LarError, ToolError

__all__ = [
    "McpManager",
    "McpServer",
    "McpServerConfig",
    "McpStartError",
    "McpStartFailure",
    "TransportFactory",
    "default_transport",
    "load_mcp_json",
    "parse_mcp_servers",
]

ServerState = Literal["stopped", "starting", "running", "failed"]
TransportFactory = Callable[[McpServerConfig, "IO[bytes] | None"], AbstractAsyncContextManager[Any]]
"""Builds the SDK transport (an async context manager yielding read/write streams)."""

STOP_GRACE_S = 15.0  # the SDK bounds a stdio shutdown: stdin close, SIGTERM, SIGKILL, 2 s each
CALL_GRACE_S = 5.0  # beyond the SDK's own per-call timeout, in case a transport hangs
STDERR_KEEP_BYTES = 1 << 20  # a chatty server's stderr log is emptied past this
HTTP_TIMEOUT_S = 30.0
HTTP_READ_TIMEOUT_S = 300.0  # streams stay open between events
_CLOSED_MESSAGES = ("Connection closed", "SSE stream ended without a response")


class McpStartError(LarError):
    """An MCP server did not start (not found, crashed, timed out, refused)."""

    def __init__(self, server: str, reason: str):
        self.server = server
        self.reason = reason
        super().__init__(f"MCP server {server!r} failed to start: {reason}")


@dataclass(slots=True)
class McpStartFailure:
    """A server that could not start; the run goes on without it."""

    server: str
    transport: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"server": self.server, "transport": self.transport, "error": self.error}


# --------------------------------------------------------------------------- transports


def default_transport(
    config: McpServerConfig,
    errlog: IO[bytes] | None,
    *,
    base_env: Mapping[str, str] | None = None,
) -> AbstractAsyncContextManager[Any]:
    """The SDK transport for ``config``: stdio, streamable HTTP or SSE."""
    if config.type == "stdio":
        # Secrets reach a server only through its own ``env``: the parent's are scrubbed.
        env = {**(dict(base_env) if base_env is not None else scrubbed_env()), **config.env}
        params = StdioServerParameters(
            command=config.command or "", args=list(config.args), env=env, cwd=config.cwd
        )
        return stdio_client(params, errlog=cast(Any, errlog if errlog is not None else sys.stderr))
    url = config.url or ""
    if config.type == "sse":
        return sse_client(
            url,
            headers=dict(config.headers) or None,
            timeout=HTTP_TIMEOUT_S,
            sse_read_timeout=HTTP_READ_TIMEOUT_S,
        )
    return _streamable_http(url, dict(config.headers))


@asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    # A client we pass in is ours to close; it is the only way to send headers.
    timeout = httpx2.Timeout(HTTP_TIMEOUT_S, read=HTTP_READ_TIMEOUT_S)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


class _WatchedRead:
    """The transport's read stream; sets ``lost`` when it ends (the server went away)."""

    def __init__(self, inner: Any, lost: anyio.Event):
        self._inner = inner
        self._lost = lost

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._lost.set()
            raise

    def __aiter__(self) -> _WatchedRead:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._lost.set()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedRead:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._inner.__aexit__(*exc)


@asynccontextmanager
async def _watched(
    transport: AbstractAsyncContextManager[Any], lost: anyio.Event
) -> AsyncIterator[Any]:
    async with transport as (read_stream, write_stream):
        yield _WatchedRead(read_stream, lost), write_stream


# --------------------------------------------------------------------------- one server


def _describe(exc: BaseException) -> str:
    """One line for a person: the innermost real error of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _stderr_tail(log: IO[bytes] | None, limit: int = 800) -> str:
    if log is None or log.closed:
        return ""
    try:
        fd = log.fileno()
        size = os.fstat(fd).st_size
        data = os.pread(fd, limit, max(0, size - limit)).decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in data.splitlines() if line.strip()]
    return " | ".join(lines[-4:])[-limit:]


async def _list_all_tools(client: Client) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a paginator that never ends must not hang the start
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


class McpServer:
    """One MCP server connection: start, list tools, call tools, stop, restart."""

    def __init__(
        self,
        config: McpServerConfig,
        *,
        transport: TransportFactory | None = None,
        base_env: Mapping[str, str] | None = None,
    ):
        self.config = config
        self._transport = transport
        self._base_env = base_env
        self.state: ServerState = "stopped"
        self.error: str | None = None
        self.tools: list[mcp_types.Tool] = []
        self.starts = 0
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._scope: anyio.CancelScope | None = None
        self._lost: anyio.Event | None = None  # made per connection, inside the loop
        self._lock = asyncio.Lock()
        self._closed = False
        self._stderr: IO[bytes] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def alive(self) -> bool:
        lost = self._lost
        return self.state == "running" and self._client is not None and not (lost and lost.is_set())

    async def start(self) -> list[mcp_types.Tool]:
        """Connect and list the tools; :class:`McpStartError` when it cannot."""
        async with self._lock:
            self._closed = False
            if self.alive:
                return self.tools
            return await self._start_locked()

    async def _start_locked(self) -> list[mcp_types.Tool]:
        await self._halt()
        self.state, self.error = "starting", None
        self.starts += 1
        started: asyncio.Future[list[mcp_types.Tool]] = asyncio.get_running_loop().create_future()
        # The owner task enters this scope; the deadline is lifted once the tools are listed.
        scope = anyio.CancelScope(deadline=anyio.current_time() + self.config.startup_timeout_s)
        lost = anyio.Event()
        self._scope, self._lost = scope, lost
        self._task = asyncio.create_task(self._own(scope, lost, started), name=f"mcp:{self.name}")
        try:
            tools = await asyncio.shield(started)
        except asyncio.CancelledError:
            scope.cancel()  # the owner winds down by itself; aclose() reaps it
            raise
        except McpStartError:
            await self._halt()
            raise
        self.tools = tools
        return tools

    async def _own(
        self,
        scope: anyio.CancelScope,
        lost: anyio.Event,
        started: asyncio.Future[list[mcp_types.Tool]],
    ) -> None:
        """The owner task: holds the SDK's context managers from enter to exit."""
        errlog = self._open_errlog() if self.config.type == "stdio" else None
        reason: str | None = None
        try:
            with scope:
                factory = self._transport or self._default_factory
                transport = _watched(factory(self.config, errlog), lost)
                info = mcp_types.Implementation(name="local-ai-router", version=__version__)
                async with Client(transport, client_info=info) as client:
                    tools = await _list_all_tools(client)
                    scope.deadline = math.inf
                    self._client, self.state = client, "running"
                    started.set_result(tools)
                    await lost.wait()
                    reason = "the server closed the connection"
        except Exception as exc:
            reason = _describe(exc)
        finally:
            self._client = None
            if scope.cancelled_caught and not started.done():
                reason = (
                    "stopped while starting"
                    if self._closed
                    else f"did not start within {self.config.startup_timeout_s:g}s"
                )
            tail = _stderr_tail(errlog)
            if reason and tail:
                reason = f"{reason} (stderr: {tail})"
            if errlog is not None:
                errlog.close()
            if not started.done():
                self.state, self.error = "failed", reason or "stopped while starting"
                started.set_exception(McpStartError(self.name, self.error))
                started.exception()  # retrieved: the starter may be gone
            elif self.state in ("running", "starting"):
                self.state, self.error = "failed", reason or "the connection ended"
            elif self.state == "failed" and tail and self.error and "stderr:" not in self.error:
                self.error = f"{self.error} (stderr: {tail})"

    def _default_factory(
        self, config: McpServerConfig, errlog: IO[bytes] | None
    ) -> AbstractAsyncContextManager[Any]:
        return default_transport(config, errlog, base_env=self._base_env)

    def _open_errlog(self) -> IO[bytes] | None:
        """A temp file for the server's stderr: its tail explains a crash."""
        try:
            log = tempfile.TemporaryFile(prefix=f"lar-mcp-{self.name[:20]}-")  # noqa: SIM115
            flags = fcntl.fcntl(log.fileno(), fcntl.F_GETFL)
            # Appending lets us empty the file under a running server (see _trim_errlog).
            fcntl.fcntl(log.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
        except OSError:
            return None
        self._stderr = log
        return log

    def _trim_errlog(self) -> None:
        log = self._stderr
        if log is None or log.closed:
            return
        try:
            if os.fstat(log.fileno()).st_size > STDERR_KEEP_BYTES:
                os.ftruncate(log.fileno(), 0)
        except OSError:
            pass

    async def _halt(self) -> None:
        """Stop the owner task (if any) and wait for it, bounded."""
        task, scope = self._task, self._scope
        self._task = None
        if task is None:
            return
        if scope is not None:
            scope.cancel()
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_S)
            except TimeoutError:
                task.cancel()  # last resort; the SDK's shutdown is bounded well below this

    async def stop(self) -> None:
        """Stop the server (its whole process group for stdio); calls fail until ``start``."""
        self._closed = True
        if self.state != "failed":
            self.state = "stopped"
        await self._halt()
        self.state = "stopped"

    async def _connected(self) -> tuple[Client, anyio.Event]:
        if self._closed:
            raise ToolError(f"MCP server {self.name!r} is stopped")
        if not self.alive:
            async with self._lock:
                if not self.alive:
                    try:
                        await self._start_locked()
                    except McpStartError as exc:
                        raise ToolError(
                            f"MCP server {self.name!r} is not running and could not be "
                            f"restarted: {exc.reason}"
                        ) from None
        assert self._client is not None and self._lost is not None
        return self._client, self._lost

    def _died(self, lost: anyio.Event, reason: str) -> ToolError:
        if lost is self._lost and self.state == "running":
            tail = _stderr_tail(self._stderr)
            self.state = "failed"
            self.error = f"{reason} (stderr: {tail})" if tail else reason
            lost.set()  # wakes the owner, which tears the connection down
        why = self.error if lost is self._lost and self.error else reason
        return ToolError(
            f"MCP server {self.name!r} is not running: {why}; it will be restarted on the next call"
        )

    def _timed_out(self, tool: str) -> str:
        return f"{tool} on MCP server {self.name!r} timed out after {self.config.call_timeout_s:g}s"

    async def call_tool(self, tool: str, args: Mapping[str, Any]) -> mcp_types.CallToolResult:
        """Call ``tool`` (the server's own name); failures are :class:`ToolError`."""
        client, lost = await self._connected()
        timeout = self.config.call_timeout_s
        try:
            with anyio.fail_after(timeout + CALL_GRACE_S):
                return await client.call_tool(tool, dict(args), read_timeout_seconds=timeout)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise ToolError(self._timed_out(tool)) from None
            if exc.code == CONNECTION_CLOSED and (lost.is_set() or exc.message in _CLOSED_MESSAGES):
                raise self._died(lost, "the connection closed") from None
            raise ToolError(f"MCP server {self.name!r} rejected {tool}: {exc.message}") from None
        except TimeoutError:
            raise ToolError(self._timed_out(tool)) from None
        except ValidationError as exc:
            raise ToolError(f"MCP server {self.name!r} sent a malformed result: {exc}") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise self._died(lost, _describe(exc)) from None
        except httpx2.TransportError as exc:
            raise self._died(lost, _describe(exc)) from None
        except Exception as exc:
            raise ToolError(
                f"{tool} on MCP server {self.name!r} failed: {_describe(exc)}"
            ) from None
        finally:
            self._trim_errlog()


# --------------------------------------------------------------------------- tools


def _make_tool(server: McpServer, spec: mcp_types.Tool, name: str) -> Tool:
    schema = spec.input_schema if isinstance(spec.input_schema, dict) else {}
    annotations = spec.annotations

    async def run(ctx: ToolContext, /, **args: Any) -> str:
        # ``ctx`` is positional-only: a server may well name an argument "ctx".
        result = await server.call_tool(spec.name, args)
        return truncate(render_result(result, tool=name), ctx.output_limit)

    title = spec.title or (annotations.title if annotations else None) or spec.name
    built = Tool(
        name=name,
        description=short_description(spec.description, fallback=title),
        parameters=slim_schema(schema),
        fn=run,
        validator=lambda a: a,
        read_only=bool(annotations and annotations.read_only_hint),
        kind="other",
    )

    def validate(args: dict[str, Any]) -> dict[str, Any]:
        fixed, problems = check_arguments(args, schema)
        if problems:
            raise ToolError(
                f"invalid arguments for {name}: {'; '.join(problems)}. Expected: {built.compact()}"
            )
        return fixed

    built.validator = validate
    return built


class McpManager:
    """All MCP servers of a run or of ``lar serve``."""

    def __init__(
        self,
        servers: Mapping[str, McpServerConfig] | Iterable[McpServerConfig],
        *,
        transport: TransportFactory | None = None,
        base_env: Mapping[str, str] | None = None,
    ):
        configs = list(servers.values()) if isinstance(servers, Mapping) else list(servers)
        self.servers: dict[str, McpServer] = {
            c.name: McpServer(c, transport=transport, base_env=base_env) for c in configs
        }
        self._tools: list[Tool] | None = None
        self._tool_server: dict[str, str] = {}

    async def start(self) -> list[McpStartFailure]:
        """Start every server not running, concurrently; failures are returned, never raised."""
        pending = [s for s in self.servers.values() if not s.alive]
        results = await asyncio.gather(*(s.start() for s in pending), return_exceptions=True)
        self._tools = None
        failures = []
        for server, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                reason = result.reason if isinstance(result, McpStartError) else _describe(result)
                failures.append(McpStartFailure(server.name, server.config.type, reason))
        return failures

    def tools(self) -> list[Tool]:
        """``mcp__<server>__<tool>`` tools of every server that listed its tools."""
        if self._tools is None:
            seen: set[str] = set()
            built: list[Tool] = []
            for server in self.servers.values():
                for spec in server.tools:
                    name = mcp_tool_name(server.name, spec.name)
                    if name in seen:  # two names that sanitize alike
                        name = with_hash(name, f"{server.name}\0{spec.name}")
                    seen.add(name)
                    self._tool_server[name] = server.name
                    built.append(_make_tool(server, spec, name))
            self._tools = built
        return list(self._tools)

    async def status(self) -> list[dict[str, Any]]:
        """For ``lar mcp list``: each server, its state and its tools."""
        by_server: dict[str, list[str]] = {}
        for t in self.tools():
            by_server.setdefault(self._tool_server[t.name], []).append(t.name)
        out = []
        for server in self.servers.values():
            tool_names = by_server.get(server.name, [])
            out.append(
                {
                    "name": server.name,
                    "transport": server.config.type,
                    "target": server.config.target(),
                    "status": server.state,
                    "error": server.error,
                    "tools": tool_names,
                }
            )
        return out

    async def aclose(self) -> None:
        """Stop every server; nothing is left running."""
        await asyncio.gather(*(s.stop() for s in self.servers.values()), return_exceptions=True)

    async def __aenter__(self) -> McpManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
