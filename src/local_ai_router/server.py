"""The app factory: gateway, agent API and web UI on one ASGI app."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from importlib import resources
from types import MappingProxyType

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from .api.agent import build_agent_router
from .backends.base import Backend
from .config import Settings
from .gateway.api import ApiError, build_gateway_router, error_response
from .gateway.chat_api import ChatCompletions
from .gateway.memory_api import build_memory_router
from .gateway.messages_api import build_messages_router
from .runtime import Runtime

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class _App(FastAPI):
    """FastAPI, with the hot gateway endpoints dispatched ahead of its middleware stack.

    Its middleware and routing took ~15% of the gateway's CPU on ``POST /v1/chat/completions``
    under load (bench/gateway.py; ~11 us a call in-process, plus FastAPI 0.165 reading its
    OpenTelemetry settings per request). That endpoint is a plain ASGI app that answers its
    own errors in the same shapes as the handlers below, so it loses nothing by skipping
    them. Every other method and path (and so 405s, redirects, docs) goes through FastAPI
    as usual. Mind it when adding middleware: a hot route does not pass through it.
    """

    hot_routes: Mapping[str, ASGIApp] = MappingProxyType({})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            hot = self.hot_routes.get(scope["path"])
            if hot is not None:
                await hot(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    backends: Sequence[Backend] | None = None,
    with_agent: bool = True,
) -> FastAPI:
    """The ASGI app. ``backends`` replaces the configured ones (tests, embedding)."""
    runtime = Runtime.create(settings, backends=backends)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    chat = ChatCompletions(runtime.gateway, runtime)
    app = _App(title="local-ai-router", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.hot_routes = {"/v1/chat/completions": chat}
    app.state.lar = runtime
    _install_error_handlers(app)
    app.include_router(build_gateway_router(runtime.gateway, runtime, chat=chat))
    app.include_router(build_messages_router(runtime.gateway, runtime))
    app.include_router(build_memory_router(runtime))
    if with_agent:
        app.include_router(build_agent_router(runtime))
    _add_web_ui(app)
    return app


def _add_web_ui(app: FastAPI) -> None:
    """``GET /ui``: one static page (chat, agent runs, approvals) over the public API.

    The page itself holds no data and needs no key; every call it makes does, so it is
    as open as the API behind it. Read once here: no file access per request."""
    page = (resources.files(__package__) / "webui" / "index.html").read_text(encoding="utf-8")
    # The page runs only its own inline script and talks only to this server.
    csp = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )

    async def ui() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": csp})

    async def root() -> RedirectResponse:
        return RedirectResponse("/ui")

    app.add_api_route("/ui", ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", root, methods=["GET"], include_in_schema=False)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        return error_response(
            400, f"invalid request: {loc}: {err.get('msg')}", code="invalid_request"
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, str(exc.detail), code=code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(
            500, f"internal error: {type(exc).__name__}: {exc}", "server_error", "internal_error"
        )
