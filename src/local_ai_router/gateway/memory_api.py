"""/memory/*: the opt-in conversation memory, per user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from .api import ApiError, read_json
from .auth import require_scope

__all__ = ["build_memory_router"]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    user_id: str | None = None
    limit: int = Field(20, ge=1, le=200)


def build_memory_router(app_state: Any) -> APIRouter:
    r = APIRouter(prefix="/memory")

    def user_of(request: Request, claimed: str | None = None) -> str:
        """The caller's user id; required, so no caller can read every user's memory."""
        user = request.headers.get("x-user-id") or request.query_params.get("user_id")
        if user and claimed and claimed != user:
            raise ApiError(
                403,
                "user_id in the body differs from X-User-ID",
                type_="permission_error",
                code="forbidden",
            )
        user = user or claimed
        if not user:
            raise ApiError(400, "memory endpoints need an X-User-ID header", code="missing_user_id")
        return user

    @r.get("/conversations")
    async def list_conversations(request: Request) -> Response:
        await require_scope(request, app_state, "chat")
        return JSONResponse({"conversations": await app_state.memory.list(user_of(request))})

    @r.get("/conversations/{cid}")
    async def get_conversation(request: Request, cid: str) -> Response:
        await require_scope(request, app_state, "chat")
        conv = await app_state.memory.get(cid, user_of(request))
        if conv is None:
            raise ApiError(404, f"conversation {cid!r} not found", code="not_found")
        return JSONResponse(conv)

    @r.delete("/conversations/{cid}")
    async def delete_conversation(request: Request, cid: str) -> Response:
        await require_scope(request, app_state, "chat")
        if not await app_state.memory.delete(cid, user_of(request)):
            raise ApiError(404, f"conversation {cid!r} not found", code="not_found")
        return JSONResponse({"deleted": cid})

    @r.post("/search")
    async def search(request: Request) -> Response:
        await require_scope(request, app_state, "chat")
        data = await read_json(request, 1024 * 1024)
        try:
            req = SearchRequest.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ApiError(
                400,
                f"invalid request: {'.'.join(map(str, err['loc']))}: {err['msg']}",
                code="invalid_request",
            ) from None
        hits = await app_state.memory.search(req.query, user_of(request, req.user_id), req.limit)
        return JSONResponse({"results": hits})

    return r
