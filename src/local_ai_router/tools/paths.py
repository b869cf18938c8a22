"""Workspace confinement: every path a tool touches must resolve inside the workspace.

The check is done on *real* paths (symlinks and ``..`` resolved) with
``Path.is_relative_to``; the system this project replaces compared string
prefixes, which let ``/ws-evil`` pass for ``/ws`` and followed symlinks out.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..types import WorkspaceViolation

__all__ = ["display_path", "resolve_in_workspace", "workspace_root"]


def workspace_root(workspace: Path) -> Path:
    """The workspace's real path (what containment is checked against)."""
    return Path(os.path.realpath(workspace))


def resolve_in_workspace(workspace: Path, path: str) -> Path:
    """The real path of ``path`` if it lies inside ``workspace``, else WorkspaceViolation.

    Relative paths are taken relative to the workspace; absolute paths are accepted only
    when they resolve inside it. ``~`` is not expanded (it would name the home directory).
    """
    root = workspace_root(workspace)
    if not isinstance(path, str):
        raise WorkspaceViolation(f"path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise WorkspaceViolation("path contains a NUL byte; use a plain path inside the workspace")
    text = path.strip()
    if text.startswith("~"):
        raise WorkspaceViolation(
            f"path {path!r} refers to a home directory, outside the workspace {root}; "
            "use a path inside the workspace (relative paths start there)"
        )
    candidate = Path(text) if text else Path(".")
    if not candidate.is_absolute():
        candidate = root / candidate
    real = Path(os.path.realpath(candidate))
    if not real.is_relative_to(root):
        raise WorkspaceViolation(
            f"path {path!r} resolves outside the workspace {root}; use a path inside it"
        )
    return real


def display_path(workspace: Path, path: Path) -> str:
    """``path`` relative to the workspace, as the model should write it back ('.' for the root)."""
    root = workspace_root(workspace)
    try:
        rel = path.relative_to(root)
    except ValueError:
        return str(path)
    text = rel.as_posix()
    return text if text else "."
