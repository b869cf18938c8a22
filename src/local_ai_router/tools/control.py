"""The control tool: the model's way to end the run with its answer."""

from __future__ import annotations

from .registry import Tool, ToolContext, tool

__all__ = ["control_tools", "task_complete"]


@tool(read_only=True, kind="read")
async def task_complete(ctx: ToolContext, answer: str) -> str:
    """Finish with the answer"""
    # The loop handles this action itself (it ends the run); running it is harmless.
    return answer


def control_tools() -> list[Tool]:
    return [task_complete]
