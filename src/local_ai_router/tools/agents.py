"""``spawn_agents``: hand independent tasks to children that run in parallel."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..types import ToolError
from .registry import Tool, ToolContext, tool

__all__ = ["SubTask", "agent_tools", "spawn_agents"]


class SubTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    agent: str | None = None
    description: str | None = None


@tool(kind="other")
async def spawn_agents(ctx: ToolContext, tasks: list[SubTask]) -> str:
    """Run subtasks in parallel agents (agent: general or explore)"""
    spawner = ctx.services.get("spawner")
    if spawner is None:
        raise ToolError("subagents are not available in this run")
    if not tasks or any(not str(_field(t, "prompt")).strip() for t in tasks):
        raise ToolError("each task needs a non-empty prompt: tasks: [{prompt, agent?}]")
    # Validated arguments arrive as plain dicts (see ToolRegistry); direct callers may pass models.
    return await spawner.spawn([t if isinstance(t, dict) else t.model_dump() for t in tasks])


def _field(task: SubTask | dict, name: str) -> object:
    return task.get(name) if isinstance(task, dict) else getattr(task, name)


def agent_tools() -> list[Tool]:
    return [spawn_agents]
