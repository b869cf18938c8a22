"""HTTP surface of the gateway: /v1/*, /health, /metrics, /admin/*, /memory/*.

Errors always come back in OpenAI's shape ``{"error": {message, type, code}}``
with the right status; a malformed request never reaches a backend and never
produces a traceback. ``POST /v1/chat/completions`` lives in :mod:`.chat_api`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..backends.openai_compat import RawJSON, loads_object
from ..types import BackendError, BackendHTTPError, RoutingError
from .auth import require_scope
from .service import Gateway

if TYPE_CHECKING:
    from .chat_api import ChatCompletions

__all__ = [
    "ApiError",
    "ChatCompletions",
    "GatewayEndpoints",
    "backend_error",
    "build_gateway_router",
    "error_response",
    "parse_json",
    "read_body",
    "read_json",
    "routing_error",
]


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


async def read_body(chunks: AsyncIterator[bytes], length: str | None, max_bytes: int) -> bytes:
    """The request body, refused (413) past ``max_bytes`` whether declared or sent."""
    if length and length.isdigit() and int(length) > max_bytes:
        raise ApiError(
            413, f"request body is {length} bytes; the limit is {max_bytes}", code="body_too_large"
        )
    # Read chunk by chunk: a chunked upload without content-length must not fill memory.
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"request body exceeds {max_bytes} bytes", code="body_too_large")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_json(raw: bytes) -> Any:
    """JSON from a request body; an object comes back as a :class:`RawJSON` (keeps ``raw``)."""
    if not raw.strip():
        raise ApiError(400, "request body is empty; send a JSON object", code="invalid_json")
    try:
        return loads_object(raw)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None


async def read_json(request: Request, max_bytes: int) -> Any:
    raw = await read_body(request.stream(), request.headers.get("content-length"), max_bytes)
    data = parse_json(raw)
    return dict(data) if type(data) is RawJSON else data


class GatewayEndpoints:
    """The gateway's FastAPI handlers (all but the chat endpoint, a plain ASGI app)."""

    def __init__(self, gateway: Gateway, app_state: Any):
        self.gateway = gateway
        self.app_state = app_state
        self.settings = gateway.settings

    async def list_models(self, request: Request) -> Response:
        await require_scope(request, self.app_state, "chat")
        now = int(time.time())
        data = [
            {"id": m, "object": "model", "created": now, "owned_by": b}
            for m, b in self.gateway.router.all_models()
        ]
        seen = {d["id"] for d in data}
        for alias, target in self.settings.aliases.items():
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

    async def health(self) -> Response:
        gateway = self.gateway
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

    async def metrics(self, request: Request) -> Response:
        await require_scope(request, self.app_state, "admin")
        gateway = self.gateway
        gateway.metrics.queue_depth.set(gateway.router.queue_depth)
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    async def admin_backends(self, request: Request) -> Response:
        await require_scope(request, self.app_state, "admin")
        gateway = self.gateway
        return JSONResponse(
            {
                "backends": [s.snapshot() for s in gateway.router.states.values()],
                "availability": gateway.health.availability(),
                "queue_depth": gateway.router.queue_depth,
            }
        )

    async def _set_drain(self, request: Request, name: str, drained: bool) -> Response:
        await require_scope(request, self.app_state, "admin")
        try:
            st = self.gateway.router.state(name)
        except RoutingError as exc:
            raise ApiError(404, str(exc), code="backend_not_found") from None
        st.drained = drained
        return JSONResponse(st.snapshot())

    async def drain(self, request: Request, name: str) -> Response:
        return await self._set_drain(request, name, True)

    async def undrain(self, request: Request, name: str) -> Response:
        return await self._set_drain(request, name, False)


def build_gateway_router(
    gateway: Gateway, app_state: Any, *, chat: ChatCompletions | None = None
) -> APIRouter:
    """The gateway's routes; ``chat`` is the chat endpoint when the app also holds it."""
    from .chat_api import ChatCompletions  # local: chat_api imports this module

    r = APIRouter()
    # A plain ASGI route: FastAPI's request handling (dependencies, Response classes)
    # cost ~55 us per call on the hottest path. create_app also dispatches it ahead of
    # the middleware; this route serves apps built otherwise and gives other methods a 405.
    chat = chat or ChatCompletions(gateway, app_state)
    r.add_route("/v1/chat/completions", chat, methods=["POST"])

    h = GatewayEndpoints(gateway, app_state)
    r.add_api_route("/v1/models", h.list_models, methods=["GET"])
    r.add_api_route("/health", h.health, methods=["GET"])
    r.add_api_route("/metrics", h.metrics, methods=["GET"])
    r.add_api_route("/admin/backends", h.admin_backends, methods=["GET"])
    r.add_api_route("/admin/backends/{name}/drain", h.drain, methods=["POST"])
    r.add_api_route("/admin/backends/{name}/undrain", h.undrain, methods=["POST"])
    return r


def __getattr__(name: str) -> Any:
    # ``api.ChatCompletions`` still works for old imports; lazily, as chat_api imports this.
    if name == "ChatCompletions":
        from .chat_api import ChatCompletions

        return ChatCompletions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
