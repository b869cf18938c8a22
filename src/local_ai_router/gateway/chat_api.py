"""``POST /v1/chat/completions``: the gateway's hottest route, as a plain ASGI app.

It skips FastAPI's request handling (see server.py) and so reads, validates and answers
errors itself, in the same OpenAI shapes as the rest of the API (:mod:`.api`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from starlette.types import Receive, Scope, Send

from ..backends.openai_compat import RawJSON
from ..types import BackendError, RoutingError
from .api import ApiError, backend_error, error_response, parse_json, read_body, routing_error
from .auth import require_scope
from .service import Attempt, Gateway, StreamSession, sse

__all__ = [
    "ChatCompletions",
    "ChatRequest",
    "MemoryContext",
    "parse_chat_body",
    "route_headers",
    "routing_headers",
]

log = logging.getLogger(__name__)


class ChatRequest(BaseModel):
    """Only what the gateway must read; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow")
    # Strict: the body is forwarded as sent, so "yes" or "5" must not be coerced here
    # and then reach the backend (or the router) as a string.
    model: StrictStr = "auto"
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: StrictBool | None = False
    max_tokens: StrictInt | None = Field(None, gt=0)
    max_completion_tokens: StrictInt | None = Field(None, gt=0)
    tools: list[dict[str, Any]] | None = None


def _plainly_valid(data: dict[str, Any]) -> bool:
    """What :class:`ChatRequest` and the role check accept, in the common case, without
    pydantic (which also copies every message). False sends the body to the full check."""
    if type(data.get("model", "")) is not str:
        return False
    messages = data.get("messages")
    if type(messages) is not list or not messages:
        return False
    for msg in messages:
        if type(msg) is not dict or type(msg.get("role")) is not str:
            return False
    stream = data.get("stream")
    if stream is not None and type(stream) is not bool:
        return False
    for key in ("max_tokens", "max_completion_tokens"):
        value = data.get(key)
        if value is not None and (type(value) is not int or value <= 0):
            return False
    tools = data.get("tools")
    return tools is None or (type(tools) is list and all(type(t) is dict for t in tools))


def parse_chat_body(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_request")
    if _plainly_valid(data):
        return data
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(
            400,
            f"invalid request: {loc}: {err['msg']}",
            code="invalid_request",
            type_="invalid_request_error",
        ) from None
    for i, msg in enumerate(req.messages):
        if not isinstance(msg.get("role"), str):
            raise ApiError(
                400, f"invalid request: messages[{i}].role is required", code="invalid_request"
            )
    return data


def routing_headers(h: Mapping[str, str]) -> dict[str, str]:
    """The request headers that steer routing (``X-Backend``, ``X-Force-Big``)."""
    return {k: h[k] for k in ("x-backend", "x-force-big") if k in h}


def _scope_headers(scope: Scope) -> dict[str, str]:
    """The request headers a gateway call reads, by lower-case name (the first of repeats,
    as Starlette's ``Headers`` gives); one pass, no per-lookup scan."""
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        name = name.lower()  # ASGI servers send them lower-case already; others may not
        if name[:2] == b"x-" or name == b"content-length":
            out.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return out


_NOT_HEADER_SAFE = re.compile(r"[^\x20-\x7e]")


def route_headers(attempt: Attempt) -> dict[str, str]:
    """``X-Backend`` / ``X-Model`` for a response: where the request went."""
    if attempt.state is None:
        return {}
    # The model name can come from the caller (a backend with no model list takes any
    # name); a newline or non-Latin-1 character must not break the response headers.
    model = _NOT_HEADER_SAFE.sub("?", attempt.model or "")
    return {"X-Backend": attempt.state.name, "X-Model": model}


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            c = msg.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
    return ""


_ID_CHARS = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


class MemoryContext:
    """X-Enable-Memory handling for one request."""

    def __init__(self, gateway: Gateway, headers: Mapping[str, str], memory: Any):
        self.enabled = headers.get("x-enable-memory", "").lower() in ("1", "true", "yes")
        self.user_id = headers.get("x-user-id")
        self.conversation_id = headers.get("x-conversation-id") or None
        self.memory = memory
        if not self.enabled:
            return
        if not self.user_id:
            raise ApiError(400, "X-Enable-Memory needs an X-User-ID header", code="missing_user_id")
        if len(self.user_id) > 200:
            raise ApiError(400, "X-User-ID is longer than 200 characters", code="invalid_user_id")
        if self.conversation_id and not _ID_CHARS.match(self.conversation_id):
            raise ApiError(
                400,
                "X-Conversation-ID must be 1-64 characters of letters, digits and _.:@-",
                code="invalid_conversation_id",
            )

    async def open(self, body: dict[str, Any]) -> None:
        if self.enabled:
            assert self.user_id is not None
            try:
                self.conversation_id = await self.memory.ensure_conversation(
                    self.user_id, self.conversation_id, _last_user_text(body)[:80] or "conversation"
                )
            except PermissionError as exc:
                raise ApiError(403, str(exc), type_="permission_error", code="forbidden") from None

    async def store(self, body: dict[str, Any], reply: str, model: str) -> None:
        """Store the turn; a failure is logged, never turned into a failed reply."""
        if not (self.enabled and self.conversation_id):
            return
        try:
            await self.memory.add_turn(self.conversation_id, _last_user_text(body), reply, model)
        except Exception:
            log.exception("memory: storing a turn of %s failed", self.conversation_id)

    def headers(self) -> dict[str, str]:
        return (
            {"X-Conversation-ID": self.conversation_id}
            if self.enabled and self.conversation_id
            else {}
        )


class ChatCompletions:
    """``POST /v1/chat/completions`` as an ASGI app (mounted by ``api.build_gateway_router``)."""

    def __init__(self, gateway: Gateway, app_state: Any):
        self.gateway = gateway
        self.app_state = app_state
        self.max_body = gateway.settings.server.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Errors are answered here, in the app's shapes, so this can run ahead of FastAPI's
        # middleware stack (see server.py) as well as behind it.
        try:
            await self._handle(scope, receive, send)
        except ApiError as exc:
            response = error_response(exc.status, exc.message, exc.type, exc.code, exc.headers)
            await response(scope, receive, send)
        except Exception as exc:
            log.exception("unhandled error")
            response = error_response(
                500,
                f"internal error: {type(exc).__name__}: {exc}",
                "server_error",
                "internal_error",
            )
            with contextlib.suppress(Exception):  # the reply may have started already
                await response(scope, receive, send)
            raise

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        hdrs = _scope_headers(scope)
        gateway = self.gateway
        request = Request(scope, receive)
        key = await require_scope(request, self.app_state, "chat")
        started = time.perf_counter()
        key_id = key.id if key else None
        try:
            raw = await read_body(request.stream(), hdrs.get("content-length"), self.max_body)
            body = parse_chat_body(parse_json(raw))
        except ApiError as exc:  # bad input is logged and counted like any other outcome
            gateway.account(
                None,
                "chat",
                exc.status,
                None,
                None,
                time.perf_counter() - started,
                key_id=key_id,
                error=f"{exc.code}: {exc.message}",
            )
            raise
        mem = MemoryContext(gateway, hdrs, self.app_state.memory)
        await mem.open(body)
        requested = str(body.get("model") or "auto")
        if body.get("stream"):
            await self._stream(receive, send, hdrs, body, mem, (started, key_id, requested))
            return
        try:
            data, attempt = await gateway.chat(body, routing_headers(hdrs))
        except (RoutingError, BackendError) as exc:
            raise self._failed(exc, started, requested, key_id, False) from None
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        gateway.account(
            attempt,
            "chat",
            200,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            time.perf_counter() - started,
            model_requested=requested,
            key_id=key_id,
        )
        if mem.enabled:
            await mem.store(body, _reply_text(data), attempt.model)
        raw = data.raw if type(data) is RawJSON else None
        content = raw if raw is not None else json.dumps(data, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(content)),
        ]
        headers += [
            (k.lower().encode(), v.encode("latin-1"))
            for k, v in (*route_headers(attempt).items(), *mem.headers().items())
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _failed(
        self,
        exc: RoutingError | BackendError,
        started: float,
        requested: str,
        key_id: str | None,
        stream: bool,
    ) -> ApiError:
        err = routing_error(exc) if isinstance(exc, RoutingError) else backend_error(exc)
        self.gateway.account(
            None,
            "chat",
            err.status,
            None,
            None,
            time.perf_counter() - started,
            model_requested=requested,
            key_id=key_id,
            stream=stream,
            error=f"{err.code}: {err.message}",
        )
        return err

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        hdrs: Mapping[str, str],
        body: dict[str, Any],
        mem: MemoryContext,
        call: tuple[float, str | None, str],
    ) -> None:
        started, key_id, requested = call
        try:
            session = await self.gateway.open_stream(body, routing_headers(hdrs))
        except (RoutingError, BackendError) as exc:
            raise self._failed(exc, started, requested, key_id, True) from None
        relay = self._relay(session, body, mem, started, key_id, requested)
        extra = {**route_headers(session.attempt), **mem.headers(), "Cache-Control": "no-cache"}
        headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in extra.items()]
        headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
        # Started here, in this task: from now on its own ``finally`` releases the slot and
        # writes the log row, however the stream ends.
        first = await relay.__anext__()

        async def pump() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in relay:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        # As Starlette's StreamingResponse (minus anyio): a client that leaves cancels the
        # relay at once, and so the upstream request, even between two tokens.
        pumping, leaving = asyncio.ensure_future(pump()), asyncio.ensure_future(left())
        try:
            await asyncio.wait((pumping, leaving), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pumping.cancel()
            leaving.cancel()
            await asyncio.gather(pumping, leaving, return_exceptions=True)
            await relay.aclose()
        if not pumping.cancelled() and pumping.exception() is not None:
            raise pumping.exception()  # type: ignore[misc]

    async def _relay(
        self,
        session: StreamSession,
        body: dict[str, Any],
        mem: MemoryContext,
        started: float,
        key_id: str | None,
        requested: str,
    ) -> AsyncIterator[bytes]:
        gateway = self.gateway
        text_parts: list[str] = []
        usage: dict[str, Any] = {}
        status, error = 200, None
        finished = False
        try:
            payload = session.first
            events = session.events
            while True:
                if payload:
                    if mem.enabled or b'"usage"' in payload:
                        _collect(payload, text_parts, usage)
                    yield b"data: " + payload + b"\n\n"
                try:
                    payload = await events.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:  # bytes already went out: end with an error chunk
                    status, error = 502, f"upstream_error: stream interrupted: {exc}"
                    yield _interrupted(session, exc)
                    break
            if status == 200:
                # Before [DONE]: a client that reads the conversation right after the
                # stream ends must find this turn in it.
                await mem.store(body, "".join(text_parts), session.attempt.model)
            finished = True  # the upstream is done; only the terminator is left to send
            yield b"data: [DONE]\n\n"
        finally:
            if not finished and error is None:
                status, error = 499, "client_closed: the client left before the stream ended"
            await gateway.close_stream(session)
            gateway.account(
                session.attempt,
                "chat",
                status,
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                time.perf_counter() - started,
                model_requested=requested,
                key_id=key_id,
                stream=True,
                error=error,
            )


def _interrupted(session: StreamSession, exc: Exception) -> bytes:
    """The error chunk that ends a stream whose upstream failed after the first bytes."""
    return sse(
        {
            "error": {
                "message": f"upstream stream from {session.upstream.backend} failed mid-way: {exc}",
                "type": "server_error",
                "code": "upstream_error",
            }
        }
    )


def _reply_text(data: dict[str, Any]) -> str:
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    msg = choice.get("message") if isinstance(choice, dict) else None
    content = msg.get("content") if isinstance(msg, dict) else None
    return content if isinstance(content, str) else ""


def _collect(payload: bytes, text_parts: list[str], usage: dict[str, Any]) -> None:
    try:
        chunk = json.loads(payload)
    except ValueError:
        return
    if not isinstance(chunk, dict):
        return
    if isinstance(chunk.get("usage"), dict):
        usage.update(chunk["usage"])
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            text_parts.append(delta["content"])
