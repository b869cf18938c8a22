"""/agent/*: runs (JSON or SSE), inspection, cancel, permission answers, sessions."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..agent.permissions import is_looser
from ..agent.runner import ActiveRun, AgentService, RunRequest
from ..gateway.api import ApiError, read_json
from ..gateway.auth import require_scope
from ..store.agent_store import AgentStore
from ..types import ConfigError, Event

__all__ = [
    "AgentEndpoints",
    "allowed_workspace",
    "build_agent_router",
    "check_mode_without_key",
    "sse_event",
]


class AgentRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=200_000)
    workspace: str | None = None
    model: str | None = None
    max_steps: int | None = Field(None, ge=1, le=1000)
    session_id: str | None = None
    permission_mode: (
        Literal["auto", "ask", "acceptEdits", "plan", "bypassPermissions", "default"] | None
    ) = None
    stream: bool = False
    tool_mode: Literal["auto", "native", "text", "constrained"] = "auto"
    # Whether this caller answers permission requests; default: yes when it streams.
    # A headless client says no, and an action that would ask is denied at once.
    interactive: bool | None = None


class ApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["allow", "deny"]
    remember: bool = False


def validated(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(
            400, f"invalid request: {loc}: {err['msg']}", code="invalid_request"
        ) from None


def sse_event(ev: Event) -> bytes:
    return f"event: {ev.type}\ndata: {json.dumps(ev.to_dict(), default=str)}\n\n".encode()


def allowed_workspace(requested: str | None, settings: Any) -> Path:
    """The run's workspace, refused (403) unless it lies under an allowed root by real path."""
    cfg = settings.agent
    default = Path(cfg.workspace).expanduser()
    roots = [Path(r).expanduser() for r in (cfg.workspace_roots or [cfg.workspace])]
    target = Path(requested).expanduser() if requested else default
    if not target.is_absolute():
        target = default / target
    real = Path(os.path.realpath(target))
    for root in roots:
        if real.is_relative_to(Path(os.path.realpath(root))):
            if not real.is_dir():
                raise ApiError(
                    400, f"workspace {requested!r} is not a directory", code="invalid_workspace"
                )
            return real
    raise ApiError(
        403,
        f"workspace {requested!r} is outside the allowed roots "
        f"({', '.join(str(r) for r in roots)}); set agent.workspace_roots to allow it",
        type_="permission_error",
        code="workspace_forbidden",
    )


def check_mode_without_key(requested: str | None, settings: Any) -> None:
    """A caller without a key gets the configured permission mode or a stricter one.

    On loopback the API needs no key, and so any local process can call it, including a
    model's own ``run_shell`` (``curl -X POST .../agent/run``): without this, a model in
    ``ask`` mode could start itself a ``bypassPermissions`` run.
    """
    configured = settings.agent.permissions.mode
    if requested and is_looser(requested, than=configured):
        raise ApiError(
            403,
            f"permission_mode {requested!r} is looser than the configured mode {configured!r}; "
            "a caller without an API key cannot widen it (send a key with the 'agent' scope, "
            "or change agent.permissions.mode)",
            type_="permission_error",
            code="mode_forbidden",
        )


class AgentEndpoints:
    """The /agent/* handlers; ``state`` is the process's Runtime (settings, service, store)."""

    def __init__(self, state: Any):
        self.state = state
        self.service: AgentService = state.agent
        self.store: AgentStore = state.agent_store

    async def run(self, request: Request) -> Response:
        state, service = self.state, self.service
        key = await require_scope(request, state, "agent")
        body: AgentRunBody = validated(AgentRunBody, await read_json(request, 1_000_000))
        workspace = allowed_workspace(body.workspace, state.settings)
        if key is None:
            check_mode_without_key(body.permission_mode, state.settings)
        wants_sse = body.stream or "text/event-stream" in request.headers.get("accept", "")
        req = RunRequest(
            task=body.task,
            workspace=workspace,
            model=body.model,
            max_steps=body.max_steps,
            session_id=body.session_id,
            permission_mode=body.permission_mode,
            tool_mode=body.tool_mode,
            interactive=wants_sse if body.interactive is None else body.interactive,
            stream=wants_sse,
        )
        try:
            active = await service.start_run(req)
        except KeyError as exc:
            raise ApiError(404, str(exc).strip("'\""), code="not_found") from None
        except ConfigError as exc:
            raise ApiError(400, str(exc), code="invalid_settings") from None
        if wants_sse:
            return StreamingResponse(
                _sse(active),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Run-ID": active.run_id},
            )
        assert active.task is not None
        await active.done.wait()
        return JSONResponse(active.loop.result.to_dict(active.loop.spec))

    async def tools(self, request: Request) -> Response:
        await require_scope(request, self.state, "agent")
        reg = self.service.tools_for(RunRequest(task="", workspace=Path(".")))
        return JSONResponse({"tools": reg.describe()})

    async def runs(
        self, request: Request, limit: int = 50, session_id: str | None = None
    ) -> Response:
        await require_scope(request, self.state, "agent")
        found = await self.store.list_runs(min(max(limit, 1), 500), session_id)
        return JSONResponse({"runs": found})

    async def get_run(self, request: Request, run_id: str) -> Response:
        await require_scope(request, self.state, "agent")
        found = await self.store.get_run(run_id)
        if found is None:
            raise ApiError(404, f"run {run_id!r} not found", code="not_found")
        found["active"] = run_id in self.service.active
        return JSONResponse(found)

    async def run_events(self, request: Request, run_id: str) -> Response:
        await require_scope(request, self.state, "agent")
        active = self.service.active.get(run_id)
        if active is None:
            raise ApiError(404, f"run {run_id!r} is not active", code="not_found")
        return StreamingResponse(_sse(active), media_type="text/event-stream")

    async def cancel(self, request: Request, run_id: str) -> Response:
        await require_scope(request, self.state, "agent")
        if not self.service.cancel(run_id):
            raise ApiError(404, f"run {run_id!r} is not active", code="not_found")
        return JSONResponse({"run_id": run_id, "cancelling": True})

    async def approve(self, request: Request, run_id: str, request_id: str) -> Response:
        await require_scope(request, self.state, "agent")
        body: ApprovalBody = validated(ApprovalBody, await read_json(request, 10_000))
        if not self.service.answer(run_id, request_id, body.decision, body.remember):
            raise ApiError(
                404,
                f"no pending permission request {request_id!r} in run {run_id!r}",
                code="not_found",
            )
        return JSONResponse({"run_id": run_id, "request_id": request_id, "decision": body.decision})

    async def sessions(
        self, request: Request, limit: int = 50, workspace: str | None = None
    ) -> Response:
        """Most recently updated first; ``workspace`` (a real path) narrows to one."""
        await require_scope(request, self.state, "agent")
        found = await self.store.list_sessions(min(max(limit, 1), 500), workspace)
        return JSONResponse({"sessions": found})

    async def fork_session(self, request: Request, session_id: str) -> Response:
        """A copy of the session's conversation to continue separately (``lar run --fork``)."""
        await require_scope(request, self.state, "agent")
        try:
            new_id = await self.store.fork_session(session_id)
        except KeyError:
            raise ApiError(404, f"session {session_id!r} not found", code="not_found") from None
        return JSONResponse({"session_id": new_id, "forked_from": session_id})

    async def get_session(self, request: Request, session_id: str) -> Response:
        await require_scope(request, self.state, "agent")
        store = self.store
        found = await store.get_session(session_id)
        if found is None:
            raise ApiError(404, f"session {session_id!r} not found", code="not_found")
        return JSONResponse(
            {
                "id": found["id"],
                "created_at": found["created_at"],
                "updated_at": found["updated_at"],
                "workspace": found["workspace"],
                "title": found["title"],
                "messages": await store.messages(session_id),
                "runs": await store.session_runs(session_id),
            }
        )

    async def compact_session(
        self, request: Request, session_id: str, model: str | None = None
    ) -> Response:
        await require_scope(request, self.state, "agent")
        try:
            return JSONResponse(await self.service.compact_session(session_id, model))
        except KeyError as exc:
            raise ApiError(404, str(exc).strip("'\""), code="not_found") from None
        except RuntimeError as exc:
            raise ApiError(409, str(exc), code="session_busy") from None

    async def delete_session(self, request: Request, session_id: str) -> Response:
        await require_scope(request, self.state, "agent")
        if not await self.store.delete_session(session_id):
            raise ApiError(404, f"session {session_id!r} not found", code="not_found")
        return JSONResponse({"deleted": session_id})


async def _sse(active: ActiveRun) -> AsyncIterator[bytes]:
    async for ev in active.stream():
        yield sse_event(ev)


def build_agent_router(state: Any) -> APIRouter:
    """``state`` is the process's Runtime (settings, agent service, agent store)."""
    h = AgentEndpoints(state)
    r = APIRouter(prefix="/agent")
    # Order as registered before: FastAPI matches routes in this order.
    r.add_api_route("/run", h.run, methods=["POST"])
    r.add_api_route("/tools", h.tools, methods=["GET"])
    r.add_api_route("/runs", h.runs, methods=["GET"])
    r.add_api_route("/runs/{run_id}", h.get_run, methods=["GET"])
    r.add_api_route("/runs/{run_id}/events", h.run_events, methods=["GET"])
    r.add_api_route("/runs/{run_id}/cancel", h.cancel, methods=["POST"])
    r.add_api_route("/runs/{run_id}/approvals/{request_id}", h.approve, methods=["POST"])
    r.add_api_route("/sessions", h.sessions, methods=["GET"])
    r.add_api_route("/sessions/{session_id}/fork", h.fork_session, methods=["POST"])
    r.add_api_route("/sessions/{session_id}", h.get_session, methods=["GET"])
    r.add_api_route("/sessions/{session_id}/compact", h.compact_session, methods=["POST"])
    r.add_api_route("/sessions/{session_id}", h.delete_session, methods=["DELETE"])
    return r
