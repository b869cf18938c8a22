"""The app factory: gateway + agent API on one ASGI app."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .backends.base import Backend
from .config import Settings
from .gateway.api import ApiError, build_gateway_router, error_response
from .gateway.keys import KeyStore
from .gateway.memory_api import build_memory_router
from .gateway.service import Gateway
from .store.db import Database
from .store.memory import MemoryStore

__all__ = ["AppState", "create_app"]

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """Everything one running server owns; passed explicitly, never global."""

    settings: Settings
    db: Database
    gateway: Gateway
    keys: KeyStore
    memory: MemoryStore
    agent: Any = None  # AgentService, attached by the agent API
    extras: dict[str, Any] = field(default_factory=dict)


def create_app(
    settings: Settings,
    *,
    backends: Sequence[Backend] | None = None,
    with_agent: bool = True,
) -> FastAPI:
    db = Database(settings.storage.url)
    gateway = Gateway(settings, db, backends=backends)
    state = AppState(
        settings=settings, db=db, gateway=gateway, keys=KeyStore(db), memory=MemoryStore(db)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.open()
        embedded = None
        if backends is None:
            from .backends.embedded import start_embedded_if_needed

            embedded = await start_embedded_if_needed(settings, gateway)
        await gateway.start()
        if state.agent is not None:
            await state.agent.start()
        try:
            yield
        finally:
            if state.agent is not None:
                await state.agent.stop()
            await gateway.stop()
            if embedded is not None:
                await embedded.stop()
            await db.close()

    app = FastAPI(title="local-ai-router", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.lar = state
    _install_error_handlers(app)
    app.include_router(build_gateway_router(gateway, state))
    app.include_router(build_memory_router(state))
    if with_agent:
        from .api.agent import attach_agent_api

        attach_agent_api(app, state)
    return app


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
