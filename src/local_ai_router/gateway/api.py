"""HTTP surface of the gateway: /v1/*, /health, /metrics, /admin/*, /memory/*.

Errors always come back in OpenAI's shape ``{"error": {message, type, code}}``
with the right status; a malformed request never reaches a backend and never
produces a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from ..types import BackendError, BackendHTTPError, RoutingError
from .auth import require_scope
from .service import Attempt, Gateway, StreamSession, sse

__all__ = ["ApiError", "build_gateway_router", "error_response", "read_json"]

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.headers = headers or {}
        super().__init__(message)


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "code": code}},
        status_code=status,
        headers=headers,
    )


def routing_error(exc: RoutingError) -> ApiError:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    type_ = (
        "invalid_request_error"
        if exc.status_code < 500 and exc.status_code != 429
        else "server_error"
    )
    if exc.status_code == 429:
        type_ = "rate_limit_error"
    return ApiError(exc.status_code, str(exc), type_=type_, code=exc.code, headers=headers)


def backend_error(exc: BackendError) -> ApiError:
    if isinstance(exc, BackendHTTPError) and 400 <= exc.status < 500:
        return ApiError(exc.status, str(exc), code="upstream_error")
    return ApiError(502, str(exc), type_="server_error", code="upstream_error")


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


async def read_json(request: Request, max_bytes: int) -> Any:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ApiError(
            413, f"request body is {length} bytes; the limit is {max_bytes}", code="body_too_large"
        )
    # Read chunk by chunk: a chunked upload without content-length must not fill memory.
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"request body exceeds {max_bytes} bytes", code="body_too_large")
        parts.append(chunk)
    raw = b"".join(parts)
    if not raw.strip():
        raise ApiError(400, "request body is empty; send a JSON object", code="invalid_json")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None


def parse_chat_body(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_request")
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


def _headers(request: Request) -> dict[str, str]:
    h = request.headers
    return {k: h[k] for k in ("x-backend", "x-force-big") if k in h}


_NOT_HEADER_SAFE = re.compile(r"[^\x20-\x7e]")


def _route_headers(attempt: Attempt) -> dict[str, str]:
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

    def __init__(self, gateway: Gateway, request: Request, memory: Any):
        self.enabled = request.headers.get("x-enable-memory", "").lower() in ("1", "true", "yes")
        self.user_id = request.headers.get("x-user-id")
        self.conversation_id = request.headers.get("x-conversation-id") or None
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


def build_gateway_router(gateway: Gateway, app_state: Any) -> APIRouter:
    r = APIRouter()
    settings = gateway.settings

    @r.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        key = await require_scope(request, app_state, "chat")
        started = time.perf_counter()
        body = parse_chat_body(await read_json(request, settings.server.max_body_bytes))
        mem = MemoryContext(gateway, request, app_state.memory)
        await mem.open(body)
        key_id = key.id if key else None
        requested = str(body.get("model") or "auto")
        if body.get("stream"):
            return await _stream(request, body, mem, started, key_id, requested)
        try:
            data, attempt = await gateway.chat(body, _headers(request))
        except (RoutingError, BackendError) as exc:
            err = routing_error(exc) if isinstance(exc, RoutingError) else backend_error(exc)
            gateway.account(
                None,
                "chat",
                err.status,
                None,
                None,
                time.perf_counter() - started,
                model_requested=requested,
                key_id=key_id,
                error=f"{err.code}: {err.message}",
            )
            raise err from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
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
        return Response(
            json.dumps(data, separators=(",", ":")),
            media_type="application/json",
            headers={**_route_headers(attempt), **mem.headers()},
        )

    async def _stream(
        request: Request,
        body: dict[str, Any],
        mem: MemoryContext,
        started: float,
        key_id: str | None,
        requested: str,
    ) -> Response:
        try:
            session = await gateway.open_stream(body, _headers(request))
        except (RoutingError, BackendError) as exc:
            err = routing_error(exc) if isinstance(exc, RoutingError) else backend_error(exc)
            gateway.account(
                None,
                "chat",
                err.status,
                None,
                None,
                time.perf_counter() - started,
                model_requested=requested,
                key_id=key_id,
                stream=True,
                error=f"{err.code}: {err.message}",
            )
            raise err from None
        relay = _relay(session, body, mem, started, key_id, requested)
        return StreamingResponse(
            relay,
            media_type="text/event-stream",
            headers={
                **_route_headers(session.attempt),
                **mem.headers(),
                "Cache-Control": "no-cache",
            },
        )

    async def _relay(
        session: StreamSession,
        body: dict[str, Any],
        mem: MemoryContext,
        started: float,
        key_id: str | None,
        requested: str,
    ) -> AsyncIterator[bytes]:
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
                    yield sse(
                        {
                            "error": {
                                "message": f"upstream stream from {session.upstream.backend} "
                                f"failed mid-way: {exc}",
                                "type": "server_error",
                                "code": "upstream_error",
                            }
                        }
                    )
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

    @r.get("/v1/models")
    async def list_models(request: Request) -> Response:
        await require_scope(request, app_state, "chat")
        now = int(time.time())
        data = [
            {"id": m, "object": "model", "created": now, "owned_by": b}
            for m, b in gateway.router.all_models()
        ]
        seen = {d["id"] for d in data}
        for alias, target in settings.aliases.items():
            if alias not in seen:
                data.append(
                    {
                        "id": alias,
                        "object": "model",
                        "created": now,
                        "owned_by": "alias",
                        "alias_for": target,
                    }
                )
        return JSONResponse({"object": "list", "data": data})

    @r.get("/health")
    async def health() -> Response:
        states = [s.snapshot() for s in gateway.router.states.values()]
        ok = any(s["healthy"] and not s["drained"] for s in states)
        return JSONResponse(
            {
                "status": "ok" if ok else ("no_backends" if not states else "degraded"),
                "backends": {
                    s["name"]: {
                        "healthy": s["healthy"],
                        "drained": s["drained"],
                        "in_flight": s["in_flight"],
                    }
                    for s in states
                },
                "availability": gateway.health.availability(),
                "queue_depth": gateway.router.queue_depth,
            }
        )

    @r.get("/metrics")
    async def metrics(request: Request) -> Response:
        await require_scope(request, app_state, "admin")
        gateway.metrics.queue_depth.set(gateway.router.queue_depth)
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    @r.get("/admin/backends")
    async def admin_backends(request: Request) -> Response:
        await require_scope(request, app_state, "admin")
        return JSONResponse(
            {
                "backends": [s.snapshot() for s in gateway.router.states.values()],
                "availability": gateway.health.availability(),
                "queue_depth": gateway.router.queue_depth,
            }
        )

    async def _set_drain(request: Request, name: str, drained: bool) -> Response:
        await require_scope(request, app_state, "admin")
        try:
            st = gateway.router.state(name)
        except RoutingError as exc:
            raise ApiError(404, str(exc), code="backend_not_found") from None
        st.drained = drained
        return JSONResponse(st.snapshot())

    @r.post("/admin/backends/{name}/drain")
    async def drain(request: Request, name: str) -> Response:
        return await _set_drain(request, name, True)

    @r.post("/admin/backends/{name}/undrain")
    async def undrain(request: Request, name: str) -> Response:
        return await _set_drain(request, name, False)

    return r


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
