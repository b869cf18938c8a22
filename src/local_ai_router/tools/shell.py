"""run_shell, and the subprocess runner the git tools share.

Each command runs in its own session (process group) so that a timeout or a
cancelled run can stop the whole tree, not just bash: SIGTERM to the group,
then SIGKILL after a grace period. Output is captured with a bounded buffer
(head and tail), so ``yes`` cannot fill memory.

Note: on Python 3.11+ ``Process.wait()`` returns only once the pipes close, so a
background job (``sleep 100 &``) holding stdout would hide bash's exit; the
runner watches ``returncode`` instead and stops such lingering jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..types import ToolError
from .paths import workspace_root
from .registry import ToolContext, scrubbed_env, tool, truncate

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "ProcessResult",
    "ShellWrapper",
    "clean_output",
    "kill_group",
    "run_process",
    "run_shell",
]

DEFAULT_TIMEOUT = 120
MAX_TIMEOUT = 600
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL
LINGER_S = 0.5  # after bash exits, how long background jobs may keep the output pipe open
_POLL_S = 0.05
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# Non-interactive defaults: a pager or a credential prompt would hang until the timeout.
_BATCH_ENV = {"PAGER": "cat", "GIT_PAGER": "cat", "GIT_TERMINAL_PROMPT": "0", "TERM": "dumb"}

ShellWrapper = Callable[[list[str]], list[str]]
"""``ctx.services["shell_wrapper"]``: rewrites the argv before exec (the sandbox seam)."""


@dataclass(slots=True)
class ProcessResult:
    returncode: int | None  # None when the process was killed by the timeout
    stdout: str
    stderr: str
    timed_out: bool = False
    lingering_killed: bool = False  # background jobs held the output open and were stopped


class _Capture:
    """Keeps the first and last ``cap`` bytes of a stream and counts what fell between."""

    def __init__(self, cap: int):
        self.cap = cap
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_len += len(chunk)
        while self.tail_len - len(self.tail[0]) >= self.cap:
            self.tail_len -= len(old := self.tail.popleft())
            self.dropped += len(old)

    def text(self, limit: int) -> str:
        """Decoded, cleaned, at most about ``limit`` characters, with a marker where cut."""
        if not self.dropped:
            return truncate(clean_output(bytes(self.head + b"".join(self.tail))), limit)
        head = clean_output(bytes(self.head))[: limit * 2 // 3]
        tail_keep = limit - len(head)
        tail = clean_output(b"".join(self.tail))
        tail = tail[-tail_keep:] if tail_keep > 0 else ""
        total = len(self.head) + self.tail_len + self.dropped
        cut = max(0, total - len(head.encode()) - len(tail.encode()))
        return f"{head}\n[... {cut} bytes cut ...]\n{tail}"


def clean_output(data: bytes) -> str:
    """UTF-8 with replacement, ANSI escapes removed, carriage-return redraws collapsed."""
    text = _ANSI.sub("", data.decode("utf-8", errors="replace"))
    if "\r" in text:
        # Progress bars redraw a line with \r: keep only what the terminal would show last.
        text = "\n".join(
            line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")
        )
    return text


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _drain(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        capture.feed(chunk)


async def _wait_returncode(proc: asyncio.subprocess.Process) -> None:
    # Polling, because Process.wait() also waits for the pipes (see the module docstring).
    while proc.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(_POLL_S)


async def _feed_stdin(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    proc.stdin.close()


async def _stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the group, give it ``grace`` seconds, then SIGKILL whatever is left."""
    kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_wait_returncode(proc), grace)
    kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_wait_returncode(proc), grace)


async def _supervise(
    proc: asyncio.subprocess.Process,
    readers: asyncio.Future[object],
    exited: asyncio.Future[object],
    time_limit: float,
    grace: float,
) -> tuple[bool, bool]:
    """Wait for exit and end of output within ``time_limit``; (timed_out, lingering_killed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + time_limit
    timed_out = lingering = False
    done, _ = await asyncio.wait(
        {readers, exited}, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED
    )
    if not done:
        timed_out = True
        await _stop_group(proc, grace)
    elif readers in done:
        # Output closed; the process may still be running (it closed stdout itself).
        try:
            await asyncio.wait_for(asyncio.shield(exited), max(0.0, deadline - loop.time()))
        except TimeoutError:
            timed_out = True
            await _stop_group(proc, grace)
    _, pending = await asyncio.wait({readers}, timeout=LINGER_S)
    if pending:  # the process is gone but background jobs still hold the pipe
        lingering = True
        kill_group(proc.pid, signal.SIGKILL)
        await asyncio.wait({readers}, timeout=grace)
    return timed_out, lingering


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    time_limit: float,
    stdin: bytes | None = None,
    merge_stderr: bool = True,
    limit: int = 20_000,
    grace: float = KILL_GRACE_S,
) -> ProcessResult:
    """Run ``argv`` in its own process group with a timeout and bounded capture."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    out, err = _Capture(limit * 4), _Capture(limit * 4)  # bytes; UTF-8 is up to 4 per char
    readers = asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err))
    helpers: list[asyncio.Future[object]] = [asyncio.ensure_future(_wait_returncode(proc))]
    if stdin is not None:
        helpers.append(asyncio.ensure_future(_feed_stdin(proc, stdin)))
    try:
        timed_out, lingering = await _supervise(proc, readers, helpers[0], time_limit, grace)
    except asyncio.CancelledError:
        kill_group(proc.pid, signal.SIGKILL)  # a cancelled run leaves nothing behind
        raise
    finally:
        for t in (readers, *helpers):
            if not t.done():
                t.cancel()
    return ProcessResult(
        None if timed_out else proc.returncode,
        out.text(limit),
        err.text(limit),
        timed_out=timed_out,
        lingering_killed=lingering,
    )


def _shell_env(ctx: ToolContext) -> dict[str, str]:
    env = scrubbed_env(ctx.env)  # again: ctx.env should be clean already, but a leak is costly
    for key, value in _BATCH_ENV.items():
        env.setdefault(key, value)
    return env


@tool(kind="shell")
async def run_shell(ctx: ToolContext, command: str, timeout: int | None = None) -> str:
    """Run a bash command"""
    if not command or not command.strip():
        raise ToolError("command is empty; give a bash command to run")
    if "\x00" in command:
        raise ToolError("command contains a NUL byte; remove it")
    seconds = DEFAULT_TIMEOUT if not timeout or timeout <= 0 else min(timeout, MAX_TIMEOUT)
    argv = ["/bin/bash", "-c", command]
    wrapper: ShellWrapper | None = ctx.services.get("shell_wrapper")
    if callable(wrapper):
        argv = list(wrapper(argv))
    budget = max(200, ctx.output_limit - 200)  # room for the status line under the run's limit
    try:
        result = await run_process(
            argv,
            cwd=workspace_root(ctx.workspace),
            env=_shell_env(ctx),
            time_limit=seconds,
            limit=budget,
        )
    except OSError as exc:  # missing sandbox binary, vanished workspace
        raise ToolError(f"could not start the command: {exc}") from None
    output = result.stdout.rstrip("\n") or "(no output)"
    if result.timed_out:
        raise ToolError(
            f"command timed out after {seconds}s and was killed with its child processes. "
            f"Output so far:\n{output}\n(use a longer timeout, max {MAX_TIMEOUT}, or run it in "
            "the background with output redirected to a file)"
        )
    code = result.returncode
    status = f"exit code {code}"
    if code is not None and code < 0:
        status += f" (killed by signal {-code})"
    if result.lingering_killed:
        status += " (background jobs still holding the output were stopped; redirect their output)"
    return f"{output}\n{status}"
