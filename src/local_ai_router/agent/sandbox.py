"""Bubblewrap sandbox for shell commands (``agent.sandbox: bwrap``).

The workspace stays read-write; the rest of the system is mounted read-only,
``/tmp`` is a private tmpfs, every namespace is unshared (so no network unless
``agent.sandbox_network: true``), a new session stops a command from pushing
keystrokes into the caller's terminal (TIOCSTI), and the sandbox dies with its
parent. :func:`bwrap_wrapper` returns the ``shell_wrapper`` service that
``run_shell`` applies to its argv.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..types import ConfigError

__all__ = ["MISSING_MESSAGE", "bwrap_argv", "bwrap_wrapper", "check_bwrap", "probe_bwrap"]

MISSING_MESSAGE = "agent.sandbox: bwrap needs bubblewrap: apt-get install bubblewrap"


def check_bwrap(path: str | None = None) -> str:
    """The bwrap executable, or ConfigError saying how to install it."""
    found = shutil.which(path or "bwrap")
    if not found:
        raise ConfigError(MISSING_MESSAGE)
    return found


def bwrap_argv(workspace: Path | str, *, network: bool = False, bwrap: str = "bwrap") -> list[str]:
    """The bwrap prefix that confines a command to ``workspace`` (argv goes after it)."""
    ws = os.path.realpath(workspace)
    argv = [
        bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--bind", ws, ws, "--chdir", ws, "--unshare-all",
    ]  # fmt: skip
    if network:
        argv.append("--share-net")
    argv += ["--new-session", "--die-with-parent", "--"]
    return argv


def bwrap_wrapper(
    workspace: Path | str, network: bool = False, *, bwrap: str | None = None
) -> Callable[[list[str]], list[str]]:
    """``argv -> bwrap ... -- argv``; checks for bwrap now, so a missing one fails at startup."""
    prefix = bwrap_argv(workspace, network=network, bwrap=check_bwrap(bwrap))

    def wrap(argv: list[str]) -> list[str]:
        if not argv:
            raise ValueError("nothing to run in the sandbox")
        return [*prefix, *argv]

    return wrap


async def probe_bwrap(workspace: Path | str, *, bwrap: str | None = None) -> None:
    """Run ``true`` in the sandbox: ConfigError with bwrap's message if it cannot start here
    (e.g. user namespaces disabled in a container)."""
    argv = [*bwrap_argv(workspace, bwrap=check_bwrap(bwrap)), "true"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        detail = err.decode("utf-8", "replace").strip()[:300]
        raise ConfigError(f"agent.sandbox: bwrap cannot create a sandbox here: {detail}")
