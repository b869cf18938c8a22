"""A scripted, real OpenAI-compatible model server for tests and benchmarks.

``ScriptedBackend`` runs uvicorn + a small Starlette app on ``127.0.0.1`` (a free port) and
answers ``POST /v1/chat/completions`` from a script of :class:`Reply` objects, recording every
request it receives. It speaks plain JSON and SSE streaming (content and tool calls, split the
way real servers split them), errors, delays, malformed output and mid-stream drops, and
emulates a few server quirks, so gateway and agent code is tested against real HTTP::

    async with ScriptedBackend(["hello", Reply(tool_calls=[tool_call("f", {"x": 1})])]) as b:
        client = openai.AsyncOpenAI(base_url=b.url, api_key="x")
        ...
        assert b.requests[0]["messages"][-1]["content"] == "hi"

Sync code (CLI tests, benchmarks) uses ``with backend.run_in_thread(): ...``.

Request handling order for a chat request: health (503) -> API key (401) -> JSON and shape
(400) -> recorded in ``requests`` / ``headers`` -> quirks -> context limit (400, ``rejected``)
-> next script item (500 "script exhausted" when none is left and there is no default).
Only the last step consumes a script item: a request the server refuses leaves the script as
it was, so a client that retries differently gets the reply meant for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "KNOWN_QUIRKS",
    "Reply",
    "ScriptItem",
    "ScriptedBackend",
    "tokens_estimate",
    "tool_call",
]

#: Server quirks ``ScriptedBackend(quirks=...)`` can emulate (each seen on a real server).
KNOWN_QUIRKS = frozenset(
    {
        # llama-cpp-python: an assistant message with content null + tool_calls -> HTTP 500.
        "llamacpp_null_content_500",
        # llama-cpp-python: stream=true with tool_choice "auto" -> HTTP 200 with an empty body.
        "llamacpp_stream_tool_choice_empty",
        # llama-cpp-python: stream_options.include_usage is ignored (no usage chunk).
        "llamacpp_no_stream_usage",
        # old vLLM: an over-long prompt -> HTTP 200 with empty choices instead of the 400.
        "vllm_overflow_empty_choices",
    }
)
_KINDS = frozenset({"openai", "vllm", "llamacpp", "ollama"})
_WORD = re.compile(r"\S+\s*|\s+")
_MAX_DELTAS = 64  # long texts are grouped so a stream never has thousands of chunks
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_STOP_GRACE_S = 1.0
_EMPTY_STREAM = "llamacpp_stream_tool_choice_empty"


@dataclass(slots=True)
class Reply:
    """One scripted answer. Only set what the test cares about.

    ``status`` >= 400 answers with an OpenAI error body (``error_message`` or a default);
    ``raw_body`` is sent verbatim instead of anything generated (for streams it is split at
    blank lines into chunks, so ``chunk_delay`` / ``fail_after_chunks`` still apply).
    ``fail_after_chunks=N`` drops the connection after N body chunks (SSE events when
    streaming; a non-streaming body counts as two halves, so 0 = headers only, 1 = half a body).
    ``usage`` is merged over the computed usage. ``delay`` is waited before the first byte,
    ``chunk_delay`` between chunks.
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    status: int = 200
    error_message: str | None = None
    raw_body: str | bytes | None = None
    fail_after_chunks: int | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        if self.content is not None and not isinstance(self.content, str):
            raise TypeError(f"Reply.content must be str or None, got {type(self.content).__name__}")
        if self.tool_calls is not None:
            if not isinstance(self.tool_calls, list | tuple) or not all(
                isinstance(tc, Mapping) for tc in self.tool_calls
            ):
                raise TypeError("Reply.tool_calls must be a list of dicts (see tool_call())")
            self.tool_calls = [dict(tc) for tc in self.tool_calls]
        if self.delay < 0 or self.chunk_delay < 0:
            raise ValueError("Reply.delay and Reply.chunk_delay must be >= 0")
        if not isinstance(self.status, int) or not 200 <= self.status <= 599:
            raise ValueError(f"Reply.status must be an HTTP status 200-599, got {self.status!r}")
        if self.error_message is not None and self.status < 400:
            raise ValueError("Reply.error_message needs an error status (>= 400)")
        if self.fail_after_chunks is not None and self.fail_after_chunks < 0:
            raise ValueError("Reply.fail_after_chunks must be >= 0")
        if self.raw_body is not None and not isinstance(self.raw_body, str | bytes):
            raise TypeError("Reply.raw_body must be str or bytes")


#: What a script holds: a Reply, a plain string (= ``Reply(content=...)``), or a callable that
#: gets the request body (dict) and returns a Reply or str, possibly as an awaitable.
ScriptItem: TypeAlias = (
    Reply | str | Callable[[dict[str, Any]], "Reply | str | Awaitable[Reply | str]"]
)


def tool_call(name: str, args: Mapping[str, Any] | str, id: str | None = None) -> dict[str, Any]:
    """An OpenAI tool call dict; ``args`` as a dict is JSON-encoded, a str is kept verbatim."""
    arguments = args if isinstance(args, str) else json.dumps(args)
    return {
        "id": id or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def tokens_estimate(body: Mapping[str, Any]) -> int:
    """Prompt tokens as the scripted server counts them: ceil(chars / 4).

    chars = length of every message's text content (a str, or the ``text`` of content parts)
    + length of every ``tool_calls[].function.arguments`` string + ``len(json.dumps(tools))``
    when the request has tools. Deterministic, so tests can compute limits exactly.
    """
    chars = 0
    messages = body.get("messages")
    for msg in messages if isinstance(messages, list) else ():
        if not isinstance(msg, Mapping):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(
                len(p["text"])
                for p in content
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            )
        calls = msg.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") if isinstance(call, Mapping) else None
            args = fn.get("arguments") if isinstance(fn, Mapping) else None
            chars += len(args) if isinstance(args, str) else 0
    if body.get("tools"):
        chars += len(json.dumps(body["tools"]))
    return -(-chars // 4)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _error_type(status: int) -> str:
    named = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }
    return named.get(status, "server_error" if status >= 500 else "invalid_request_error")


def _error(status: int, message: str, type_: str | None = None) -> Response:
    """OpenAI's error shape: ``{"error": {"message", "type", "code"}}``."""
    body = {"error": {"message": message, "type": type_ or _error_type(status), "code": status}}
    return Response(_dumps(body), status_code=status, media_type="application/json")


def _ok(obj: Any) -> Response:
    return Response(_dumps(obj), media_type="application/json")


def _pieces(text: str, min_size: int = 1) -> list[str]:
    """Split text into word-sized pieces (at most _MAX_DELTAS) that join back to ``text``."""
    if min_size > 1:  # fixed-size fragments, like streamed tool arguments
        size = max(min_size, -(-len(text) // 16))
        return [text[i : i + size] for i in range(0, len(text), size)]
    words = _WORD.findall(text)
    if len(words) > _MAX_DELTAS:
        size = -(-len(words) // _MAX_DELTAS)
        words = ["".join(words[i : i + size]) for i in range(0, len(words), size)]
    return words


def _check_chat_body(body: Any) -> str | None:
    """A clear 400 message for a request no OpenAI server would accept, else None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a list of message objects"
    if not all(isinstance(m.get("role"), str) for m in messages):
        return "every message needs a string 'role'"
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"'{key}' must be an integer"
    return None


class _Playback:
    """ASGI response that plays precomputed chunks with the reply's timing.

    While it waits (delay / chunk_delay) a watcher reads ``receive()``: a disconnect before
    the last chunk cancels the playback and counts in ``backend.cancelled``. Without any
    waiting the whole body is written at once, so there is nothing to watch.
    """

    __slots__ = ("_finished", "_gone", "backend", "chunks", "headers", "reply", "status")

    def __init__(
        self,
        backend: ScriptedBackend,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunks: list[bytes],
        reply: Reply,
    ) -> None:
        self.backend, self.status, self.headers = backend, status, headers
        self.chunks, self.reply = chunks, reply
        self._finished = self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        backend = self.backend
        backend.active += 1
        backend.max_active = max(backend.max_active, backend.active)
        try:
            if not (self.reply.delay or self.reply.chunk_delay):
                await self._play(send)
            else:
                await self._play_watched(receive, send)
        finally:
            backend.active -= 1

    async def _play_watched(self, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, task))
        try:
            await self._play(send)
        except asyncio.CancelledError:
            if not self._gone or task.uncancel() > 0:
                raise  # cancelled by someone else (server shutdown), not by our watcher
            if not self.backend._stopping:
                self.backend.cancelled += 1
        finally:
            watcher.cancel()

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._finished:
            self._gone = True
            task.cancel()

    async def _play(self, send: Send) -> None:
        reply, chunks = self.reply, self.chunks
        if not reply.chunk_delay and reply.fail_after_chunks is None:
            chunks = [b"".join(chunks)]  # same bytes, one write: syscalls dominate the cost
        if reply.delay:
            await asyncio.sleep(reply.delay)
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        last = len(chunks) - 1
        for i, chunk in enumerate(chunks):
            if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                return  # leave the response incomplete: uvicorn closes the connection
            if i and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            self._finished = i == last  # set before sending: a disconnect now is not a cancel
            await send({"type": "http.response.body", "body": chunk, "more_body": i != last})
        if not chunks:
            self._finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _TestServer(uvicorn.Server):
    """uvicorn.Server for tests: no signal handlers, stops at once instead of polling."""

    def __init__(self, config: uvicorn.Config, backend: ScriptedBackend) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()
        self._backend = backend

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns SIGINT/SIGTERM, not this server

    async def main_loop(self) -> None:
        await self.on_tick(0)  # computes the default headers once
        await self._exit.wait()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own shutdown sleeps >= 0.1 s; tests stop servers hundreds of times.
        self._backend._stopping = True
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for conn in list(self.server_state.connections):
            transport = getattr(conn, "transport", None)
            if transport is not None:
                transport.close()  # in-flight responses see a disconnect and end
            else:
                conn.shutdown()
        if self.server_state.tasks:
            _, leftovers = await asyncio.wait(self.server_state.tasks, timeout=_STOP_GRACE_S)
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()


class ScriptedBackend:
    """A real OpenAI-compatible server on loopback that plays a script and records requests.

    Attributes tests read: ``requests`` (chat bodies, in arrival order), ``headers`` (their
    headers, lower-case names), ``rejected`` (context-limit refusals), ``cancelled`` (clients
    that left before a delayed/slow response finished), ``active`` / ``max_active`` (replies
    being played now / at most at once), ``hits`` (requests per path, every endpoint).
    Attributes tests set: ``healthy`` (False: every endpoint answers 503), ``quirks``,
    ``context_window``, ``record`` (False: ``requests``/``headers`` stay empty).
    """

    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        models: Iterable[str] = ("scripted-model",),
        context_window: int | None = None,
        kind: str = "vllm",
        default: ScriptItem | None = None,
        api_key: str | None = None,
        quirks: Iterable[str] = (),
        record: bool = True,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_KINDS)}")
        self.models = [str(m) for m in models]
        if not self.models:
            raise ValueError("ScriptedBackend needs at least one model name")
        if context_window is not None and context_window <= 0:
            raise ValueError("context_window must be a positive number of tokens")
        self.quirks: set[str] = set(quirks)
        unknown = self.quirks - KNOWN_QUIRKS
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {sorted(KNOWN_QUIRKS)}")
        self.context_window, self.kind, self.api_key = context_window, kind, api_key
        self.record = record  # False: keep no request bodies (long benchmarks, big prompts)
        self._script: deque[ScriptItem] = deque()
        self.add(*script)
        self.default: ScriptItem | None = None
        self.set_default(default)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.hits: dict[str, int] = {}
        self.healthy = True
        self.rejected = self.cancelled = self.active = self.max_active = 0
        self._server: _TestServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._stopping = False
        self._app = self._build_app()

    # -- script -------------------------------------------------------------------------------

    def add(self, *replies: ScriptItem) -> None:
        """Append replies to the script (thread-safe: a deque)."""
        for item in replies:
            _check_item(item)
        self._script.extend(replies)

    def set_default(self, reply: ScriptItem | None) -> None:
        """The reply used whenever the script is empty (None: answer 500 "script exhausted")."""
        if reply is not None:
            _check_item(reply)
        self.default = reply

    @property
    def remaining(self) -> int:
        """Script items not yet played."""
        return len(self._script)

    tokens_estimate = staticmethod(tokens_estimate)

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ScriptedBackend is not running; use `async with` or start()")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"{self.base_url}/v1"

    async def start(self) -> ScriptedBackend:
        """Listen on a free loopback port; returns self once it accepts connections."""
        if self._task is not None:
            raise RuntimeError("ScriptedBackend is already running")
        config = uvicorn.Config(
            self._asgi,
            http="h11",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        # Bound here because uvicorn calls sys.exit() on bind errors. IPPROTO_TCP matters:
        # asyncio only sets TCP_NODELAY when proto is TCP, else every answer waits ~40 ms.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self._stopping = False
        server = _TestServer(config, self)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="scripted-backend")
        while not server.started:
            if task.done():
                sock.close()
                raise RuntimeError(f"ScriptedBackend failed to start: {task.exception()!r}")
            await asyncio.sleep(0.001)
        self._server, self._task = server, task
        self._port = server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop serving (idempotent). Connections still open are closed."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.request_exit()
        try:
            await task
        finally:
            self._server = self._task = self._port = None

    async def __aenter__(self) -> ScriptedBackend:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self, timeout: float = 10.0) -> Iterator[ScriptedBackend]:
        """Run the server on its own event loop in a daemon thread (for sync tests/benches)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="scripted-backend", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)
            yield self
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)
                loop.close()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"<ScriptedBackend {self.kind} {where} remaining={self.remaining}>"

    # -- HTTP ---------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

        routes = [
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._list_models, methods=["GET"]),
            Route("/props", self._props, methods=["GET"]),
            Route("/api/show", self._show, methods=["POST"]),
            Route("/health", self._health, methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: http_error})

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Health and key checks in front of every endpoint (cheaper than middleware)."""
        if scope["type"] == "http":
            path = scope["path"]
            self.hits[path] = self.hits.get(path, 0) + 1
            if not self.healthy:
                response = _error(503, "scripted backend is marked unhealthy")
                return await response(scope, receive, send)
            if self.api_key is not None and path != "/health":
                auth = dict(scope["headers"]).get(b"authorization", b"")
                if auth != b"Bearer " + self.api_key.encode():
                    response = _error(401, "missing or incorrect API key")
                    return await response(scope, receive, send)
        await self._app(scope, receive, send)

    async def _health(self, request: Request) -> Response:
        return _ok({"status": "ok"})

    async def _list_models(self, request: Request) -> Response:
        data = []
        for model in self.models:
            entry: dict[str, Any] = {"id": model, "object": "model", "owned_by": "scripted"}
            entry["created"] = 0
            if self.kind == "vllm" and self.context_window is not None:
                entry["max_model_len"] = self.context_window
            data.append(entry)
        return _ok({"object": "list", "data": data})

    async def _props(self, request: Request) -> Response:
        if self.kind != "llamacpp":
            return _error(404, "GET /props is served by llama.cpp backends only")
        settings = {} if self.context_window is None else {"n_ctx": self.context_window}
        return _ok({"default_generation_settings": settings, **settings})

    async def _show(self, request: Request) -> Response:
        if self.kind != "ollama":
            return _error(404, "POST /api/show is served by Ollama backends only")
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, ClientDisconnect):
            return _error(400, "request body must be JSON")
        name = (body.get("model") or body.get("name")) if isinstance(body, dict) else None
        if name is not None and name not in self.models:
            return Response(_dumps({"error": f"model '{name}' not found"}), 404)
        info: dict[str, Any] = {"general.architecture": "llama"}
        if self.context_window is not None:
            info["llama.context_length"] = self.context_window
        return _ok({"model_info": info})

    async def _chat(self, request: Request) -> Response | _Playback:
        try:
            raw = await request.body()
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        problem = _check_chat_body(body)
        if problem is not None:
            return _error(400, problem)
        if self.record:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
        refusal = self._refusal(body)
        if refusal is not None:
            return refusal
        reply = await self._next_reply(body)
        if isinstance(reply, Response):
            return reply
        return self._render(reply, body)

    def _refusal(self, body: dict[str, Any]) -> Response | _Playback | None:
        """Quirks and the context limit: answers that do not consume a script item."""
        quirks, stream = self.quirks, body.get("stream") is True
        if "llamacpp_null_content_500" in quirks and any(
            m.get("role") == "assistant" and m.get("content") is None and m.get("tool_calls")
            for m in body["messages"]
        ):
            return _error(500, "'NoneType' object is not iterable")  # what llama-cpp-python says
        if stream and body.get("tool_choice") == "auto" and _EMPTY_STREAM in quirks:
            return _Playback(self, 200, _SSE, [], Reply())
        if self.context_window is None:
            return None
        prompt = tokens_estimate(body)
        completion = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        if prompt + completion <= self.context_window:
            return None
        self.rejected += 1
        if "vllm_overflow_empty_choices" in quirks:
            if stream:
                return _Playback(self, 200, _SSE, [b"data: [DONE]\n\n"], Reply())
            return _ok({"id": _new_id(), "object": "chat.completion", "choices": []})
        message = (
            f"This model's maximum context length is {self.context_window} tokens. "
            f"However, you requested {prompt + completion} tokens ({prompt} in the messages, "
            f"{completion} in the completion). Please reduce the length of the messages or "
            "completion."
        )
        error = {
            "object": "error",
            "message": message,
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        return Response(_dumps(error), status_code=400, media_type="application/json")

    async def _next_reply(self, body: dict[str, Any]) -> Reply | Response:
        try:
            item = self._script.popleft()
        except IndexError:
            item = self.default
        if item is None:
            return _error(
                500,
                "script exhausted: ScriptedBackend got a chat request but has no scripted "
                f"reply left ({len(self.requests)} requests recorded; add() more or set a default)",
            )
        if isinstance(item, Reply | str):
            reply: object = item
        else:
            try:
                reply = item(body)
                if inspect.isawaitable(reply):
                    reply = await reply
            except Exception as exc:
                return _error(500, f"scripted reply callable raised {type(exc).__name__}: {exc}")
        if isinstance(reply, str):
            return Reply(content=reply)
        if not isinstance(reply, Reply):
            kind = type(reply).__name__
            return _error(500, f"scripted reply callable returned {kind}; expected Reply or str")
        return reply

    def _render(self, reply: Reply, body: dict[str, Any]) -> _Playback:
        stream = body.get("stream") is True
        if reply.raw_body is not None:
            raw = reply.raw_body.encode() if isinstance(reply.raw_body, str) else reply.raw_body
            if stream:
                chunks = [c for c in re.split(rb"(?<=\n\n)", raw) if c]
                return _Playback(self, reply.status, _SSE, chunks, reply)
            return self._whole(reply, reply.status, raw)
        if reply.status >= 400:
            message = reply.error_message or f"scripted error {reply.status}"
            err = {"message": message, "type": _error_type(reply.status), "code": reply.status}
            return self._whole(reply, reply.status, _dumps({"error": err}))
        model = body.get("model") if isinstance(body.get("model"), str) else self.models[0]
        usage = _usage(reply, body)
        if stream:
            return _Playback(self, reply.status, _SSE, self._sse(reply, body, model, usage), reply)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        completion = {
            "id": _new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}
            ],
            "usage": usage,
        }
        return self._whole(reply, reply.status, _dumps(completion))

    def _whole(self, reply: Reply, status: int, data: bytes) -> _Playback:
        """A non-streamed body; with fail_after_chunks it is sent as two halves."""
        headers = [*_JSON, (b"content-length", str(len(data)).encode())]
        if reply.fail_after_chunks is None:
            return _Playback(self, status, headers, [data], reply)
        half = len(data) // 2
        return _Playback(self, status, headers, [data[:half], data[half:]], reply)

    def _sse(
        self, reply: Reply, body: dict[str, Any], model: str, usage: dict[str, Any]
    ) -> list[bytes]:
        """The SSE events of a streamed reply, split the way vLLM/OpenAI split them."""
        options = body.get("stream_options")
        with_usage = (
            isinstance(options, dict)
            and bool(options.get("include_usage"))
            and "llamacpp_no_stream_usage" not in self.quirks
        )
        head = {"id": _new_id(), "object": "chat.completion.chunk", "created": int(time.time())}
        head["model"] = model

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = {**head, "choices": [choice]}
            if with_usage:
                obj["usage"] = None
            return b"data: " + _dumps(obj) + b"\n\n"

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": piece}) for piece in _pieces(reply.content or "")]
        for index, call in enumerate(reply.tool_calls or ()):
            fn = call.get("function")
            fn = fn if isinstance(fn, Mapping) else {}
            first = {"index": index, "id": call.get("id"), "type": call.get("type", "function")}
            first["function"] = {"name": fn.get("name"), "arguments": ""}
            events.append(event({"tool_calls": [first]}))
            args = fn.get("arguments")
            # Non-string arguments (malformed-output tests) are streamed as one raw fragment.
            fragments: list[Any] = _pieces(args, min_size=8) if isinstance(args, str) else [args]
            events += [
                event({"tool_calls": [{"index": index, "function": {"arguments": frag}}]})
                for frag in fragments
            ]
        events.append(event({}, _finish(reply)))
        if with_usage:
            events.append(b"data: " + _dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events


def _check_item(item: object) -> None:
    if not isinstance(item, Reply | str) and not callable(item):
        raise TypeError(
            f"script items must be Reply, str or a callable(body) -> Reply | str; "
            f"got {type(item).__name__}"
        )


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def _finish(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _usage(reply: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
    """Computed usage (prompt = tokens_estimate) with ``reply.usage`` merged over it."""
    chars = len(reply.content or "")
    for call in reply.tool_calls or ():
        fn = call.get("function")
        args = fn.get("arguments") if isinstance(fn, Mapping) else None
        chars += len(args) if isinstance(args, str) else 0
    prompt, completion = tokens_estimate(body), -(-chars // 4)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage.update(reply.usage or {})
    if not reply.usage or "total_tokens" not in reply.usage:
        usage["total_tokens"] = (usage.get("prompt_tokens") or 0) + (
            usage.get("completion_tokens") or 0
        )
    return usage
