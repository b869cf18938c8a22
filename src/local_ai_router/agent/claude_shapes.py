"""Claude Code's tool names and ``tool_input`` shapes, to and from ours (for :mod:`.hooks`).

Hook scripts written for Claude Code expect ``tool_name: "Bash"``, ``tool_input.command``,
an absolute ``tool_input.file_path``, timeouts in ms...; a hook's ``updatedInput`` comes
back in that shape and is mapped onto our argument names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["claude_tool_name", "from_claude_input", "to_claude_input"]


def claude_tool_name(tool: str, args: Mapping[str, Any] | None = None) -> str:
    """Claude Code's name for one of our tools (ours when it has none)."""
    if tool == "search_files":
        return "Grep" if (args or {}).get("content_search") else "Glob"
    return {
        "run_shell": "Bash", "read_file": "Read", "write_file": "Write", "edit_file": "Edit",
        "list_directory": "LS", "spawn_agents": "Task",
    }.get(tool, tool)  # fmt: skip


def _abs(workspace: Path, path: object) -> str:
    text = path if isinstance(path, str) and path.strip() else "."
    return os.path.normpath(os.path.join(workspace, os.path.expanduser(text.strip())))


def to_claude_input(tool: str, args: Mapping[str, Any], workspace: Path) -> dict[str, Any]:
    """Our arguments in Claude Code's ``tool_input`` shape (absolute ``file_path``)."""
    a = dict(args)
    if tool == "run_shell":
        out = {"command": a.get("command")}
        if isinstance(a.get("timeout"), int | float):
            out["timeout"] = int(a["timeout"] * 1000)  # Claude Code's Bash timeout is in ms
        return out
    if tool in ("read_file", "write_file", "edit_file"):
        out = {"file_path": _abs(workspace, a.pop("path", None)), **a}
        start, end = out.pop("start_line", None), out.pop("end_line", None)
        if tool == "read_file" and isinstance(start, int):
            out["offset"] = start
            if isinstance(end, int):
                out["limit"] = max(0, end - start + 1)
        return out
    if tool in ("list_directory", "search_files"):
        return {**a, "path": _abs(workspace, a.get("path"))}
    if tool == "spawn_agents":
        tasks = a.get("tasks")
        tasks = tasks if isinstance(tasks, list) else []
        first = tasks[0] if len(tasks) == 1 and isinstance(tasks[0], dict) else {}
        return {
            "tasks": tasks,
            "prompt": first.get("prompt"),
            "description": first.get("description"),
            "subagent_type": first.get("agent"),
        }
    return a


_OUR_KEYS = frozenset(
    "path content old_string new_string replace_all command pattern content_search tasks".split()  # noqa: SIM905
)


def _rel(path: str, workspace: Path) -> str:
    for root in dict.fromkeys([os.path.normpath(workspace), os.path.realpath(workspace)]):
        if path == root:
            return "."
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, root)
    return path


def from_claude_input(
    tool: str, updated: Mapping[str, Any], original: Mapping[str, Any], workspace: Path
) -> dict[str, Any]:
    """A hook's ``updatedInput`` back in our argument names, merged over the original."""
    u, out = dict(updated), dict(original)
    if isinstance(u.get("file_path"), str):
        out["path"] = _rel(u.pop("file_path"), workspace)
    if isinstance(u.get("path"), str):
        out["path"] = _rel(u.pop("path"), workspace)
    if tool == "run_shell" and isinstance(u.get("timeout"), int | float):
        out["timeout"] = max(1, int(u.pop("timeout") / 1000))  # ms -> s
    if tool == "read_file" and isinstance(u.get("offset"), int):
        out["start_line"] = u.pop("offset")
        if isinstance(u.get("limit"), int):
            out["end_line"] = out["start_line"] + u.pop("limit") - 1
    if tool == "spawn_agents" and "tasks" not in u and isinstance(u.get("prompt"), str):
        out["tasks"] = [
            {"prompt": u["prompt"], "description": u.get("description"),
             "agent": u.get("subagent_type")}
        ]  # fmt: skip
    out.update({k: v for k, v in u.items() if k in _OUR_KEYS or k in original})
    return out
