"""The scripted OpenAI-compatible server: :class:`ScriptedBackend` and its uvicorn host.

Internal module: import :class:`ScriptedBackend` from :mod:`local_ai_router.testing`, whose
docstring describes the request handling order.
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
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import wire
from .script import KNOWN_QUIRKS, Reply, ScriptItem, check_item, tokens_estimate

__all__ = ["ScriptedBackend"]

_KINDS = frozenset({"openai", "vllm", "llamacpp", "ollama"})
_STOP_GRACE_S = 1.0
_EMPTY_STREAM = "llamacpp_stream_tool_choice_empty"


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
            check_item(item)
        self._script.extend(replies)

    def set_default(self, reply: ScriptItem | None) -> None:
        """The reply used whenever the script is empty (None: answer 500 "script exhausted")."""
        if reply is not None:
            check_item(reply)
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

    def as_backend(self, name: str, **config: Any) -> dict[str, Any]:
        """This server as a ``backends:`` entry of the gateway's config."""
        return {
            "name": name,
            "url": self.url,
            "kind": self.kind,
            "models": list(self.models),
            **config,
        }

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"<ScriptedBackend {self.kind} {where} remaining={self.remaining}>"

    # -- HTTP ---------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            return wire.error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

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
                response = wire.error(503, "scripted backend is marked unhealthy")
                return await response(scope, receive, send)
            if self.api_key is not None and path != "/health":
                auth = dict(scope["headers"]).get(b"authorization", b"")
                if auth != b"Bearer " + self.api_key.encode():
                    response = wire.error(401, "missing or incorrect API key")
                    return await response(scope, receive, send)
        await self._app(scope, receive, send)

    async def _health(self, request: Request) -> Response:
        return wire.ok({"status": "ok"})

    async def _list_models(self, request: Request) -> Response:
        data = []
        for model in self.models:
            entry: dict[str, Any] = {"id": model, "object": "model", "owned_by": "scripted"}
            entry["created"] = 0
            if self.kind == "vllm" and self.context_window is not None:
                entry["max_model_len"] = self.context_window
            data.append(entry)
        return wire.ok({"object": "list", "data": data})

    async def _props(self, request: Request) -> Response:
        if self.kind != "llamacpp":
            return wire.error(404, "GET /props is served by llama.cpp backends only")
        settings = {} if self.context_window is None else {"n_ctx": self.context_window}
        return wire.ok({"default_generation_settings": settings, **settings})

    async def _show(self, request: Request) -> Response:
        if self.kind != "ollama":
            return wire.error(404, "POST /api/show is served by Ollama backends only")
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, ClientDisconnect):
            return wire.error(400, "request body must be JSON")
        name = (body.get("model") or body.get("name")) if isinstance(body, dict) else None
        if name is not None and name not in self.models:
            return Response(wire.dumps({"error": f"model '{name}' not found"}), 404)
        info: dict[str, Any] = {"general.architecture": "llama"}
        if self.context_window is not None:
            info["llama.context_length"] = self.context_window
        return wire.ok({"model_info": info})

    async def _chat(self, request: Request) -> Response | wire.Playback:
        try:
            raw = await request.body()
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return wire.error(400, f"request body is not valid JSON: {exc}")
        problem = wire.check_chat_body(body)
        if problem is not None:
            return wire.error(400, problem)
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

    def _refusal(self, body: dict[str, Any]) -> Response | wire.Playback | None:
        """Quirks and the context limit: answers that do not consume a script item."""
        quirks, stream = self.quirks, body.get("stream") is True
        if "llamacpp_null_content_500" in quirks and any(
            m.get("role") == "assistant" and m.get("content") is None and m.get("tool_calls")
            for m in body["messages"]
        ):
            # What llama-cpp-python says.
            return wire.error(500, "'NoneType' object is not iterable")
        if stream and body.get("tool_choice") == "auto" and _EMPTY_STREAM in quirks:
            return wire.Playback(self, 200, wire.SSE_HEADERS, [], Reply())
        if self.context_window is None:
            return None
        prompt = tokens_estimate(body)
        completion = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        if prompt + completion <= self.context_window:
            return None
        self.rejected += 1
        if "vllm_overflow_empty_choices" in quirks:
            if stream:
                return wire.Playback(self, 200, wire.SSE_HEADERS, [b"data: [DONE]\n\n"], Reply())
            return wire.ok({"id": wire.new_id(), "object": "chat.completion", "choices": []})
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
        return Response(wire.dumps(error), status_code=400, media_type="application/json")

    async def _next_reply(self, body: dict[str, Any]) -> Reply | Response:
        try:
            item = self._script.popleft()
        except IndexError:
            item = self.default
        if item is None:
            return wire.error(
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
                return wire.error(
                    500, f"scripted reply callable raised {type(exc).__name__}: {exc}"
                )
        if isinstance(reply, str):
            return Reply(content=reply)
        if not isinstance(reply, Reply):
            kind = type(reply).__name__
            return wire.error(
                500, f"scripted reply callable returned {kind}; expected Reply or str"
            )
        return reply

    def _render(self, reply: Reply, body: dict[str, Any]) -> wire.Playback:
        stream = body.get("stream") is True
        if reply.raw_body is not None:
            raw = reply.raw_body.encode() if isinstance(reply.raw_body, str) else reply.raw_body
            if stream:
                chunks = [c for c in re.split(rb"(?<=\n\n)", raw) if c]
                return wire.Playback(self, reply.status, wire.SSE_HEADERS, chunks, reply)
            return self._whole(reply, reply.status, raw)
        if reply.status >= 400:
            message = reply.error_message or f"scripted error {reply.status}"
            err = {"message": message, "type": wire.error_type(reply.status), "code": reply.status}
            return self._whole(reply, reply.status, wire.dumps({"error": err}))
        model = body.get("model") if isinstance(body.get("model"), str) else self.models[0]
        usage = wire.compute_usage(reply, body)
        if stream:
            return wire.Playback(
                self, reply.status, wire.SSE_HEADERS, self._sse(reply, body, model, usage), reply
            )
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        completion = {
            "id": wire.new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": wire.finish(reply),
                }
            ],
            "usage": usage,
        }
        return self._whole(reply, reply.status, wire.dumps(completion))

    def _whole(self, reply: Reply, status: int, data: bytes) -> wire.Playback:
        """A non-streamed body; with fail_after_chunks it is sent as two halves."""
        headers = [*wire.JSON_HEADERS, (b"content-length", str(len(data)).encode())]
        if reply.fail_after_chunks is None:
            return wire.Playback(self, status, headers, [data], reply)
        half = len(data) // 2
        return wire.Playback(self, status, headers, [data[:half], data[half:]], reply)

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
        head = {"id": wire.new_id(), "object": "chat.completion.chunk", "created": int(time.time())}
        head["model"] = model

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = {**head, "choices": [choice]}
            if with_usage:
                obj["usage"] = None
            return b"data: " + wire.dumps(obj) + b"\n\n"

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": piece}) for piece in wire.pieces(reply.content or "")]
        for index, call in enumerate(reply.tool_calls or ()):
            fn = call.get("function")
            fn = fn if isinstance(fn, Mapping) else {}
            first = {"index": index, "id": call.get("id"), "type": call.get("type", "function")}
            first["function"] = {"name": fn.get("name"), "arguments": ""}
            events.append(event({"tool_calls": [first]}))
            args = fn.get("arguments")
            # Non-string arguments (malformed-output tests) are streamed as one raw fragment.
            fragments: list[Any] = (
                wire.pieces(args, min_size=8) if isinstance(args, str) else [args]
            )
            events += [
                event({"tool_calls": [{"index": index, "function": {"arguments": frag}}]})
                for frag in fragments
            ]
        events.append(event({}, wire.finish(reply)))
        if with_usage:
            events.append(b"data: " + wire.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events
