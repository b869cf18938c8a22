"""run_shell on real processes: exit codes, scrubbing, timeouts killing the group, capture."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from local_ai_router.tools.registry import Tool, ToolContext, ToolRegistry
from local_ai_router.tools.shell import clean_output, run_shell
from local_ai_router.types import ToolError

SAFETY_S = 60  # a hung test fails instead of hanging; never a timing assertion


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def ctx(ws: Path) -> ToolContext:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ws), "LANG": "C.UTF-8"}
    return ToolContext(workspace=ws, env=env)


async def call(t: Tool, ctx: ToolContext, **args: Any) -> str:
    return await asyncio.wait_for(t(ctx, t.validate(args)), SAFETY_S)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting to be reaped counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _wait_dead(pid: int) -> bool:
    for _ in range(200):  # bounded wait for the kernel to finish the kill
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def _read_pids(path: Path) -> list[int]:
    for _ in range(200):
        if path.exists() and path.read_text().strip():
            return [int(x) for x in path.read_text().split()]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} was never written")


async def test_output_exit_code_and_cwd(ctx: ToolContext, ws: Path) -> None:
    out = await call(run_shell, ctx, command="echo out; echo err >&2; pwd; exit 3")
    assert out == f"out\nerr\n{ws.resolve()}\nexit code 3"
    assert await call(run_shell, ctx, command="true") == "(no output)\nexit code 0"


async def test_stdin_is_closed(ctx: ToolContext) -> None:
    # `cat` with an inherited terminal or pipe would wait forever.
    assert await call(run_shell, ctx, command="cat; echo done") == "done\nexit code 0"


async def test_secrets_are_scrubbed_even_if_ctx_env_has_them(ctx: ToolContext) -> None:
    ctx.env.update(
        {"FOO_API_KEY": "sk-123", "GH_TOKEN": "ghp", "DB_PASSWORD": "pw", "MY_SECRET": "s",
         "PLAIN_VAR": "visible"}
    )  # fmt: skip
    out = await call(run_shell, ctx, command="env")
    for leaked in ("FOO_API_KEY", "sk-123", "GH_TOKEN", "DB_PASSWORD", "MY_SECRET"):
        assert leaked not in out
    assert "PLAIN_VAR=visible" in out
    assert "GIT_TERMINAL_PROMPT=0" in out  # non-interactive defaults are added


async def test_timeout_kills_the_whole_process_group(ctx: ToolContext, ws: Path) -> None:
    cmd = "sleep 100 & echo $! > pids; sleep 100 & echo $! >> pids; echo started; wait"
    with pytest.raises(ToolError, match="timed out after 2s") as info:
        await call(run_shell, ctx, command=cmd, timeout=2)
    assert "started" in str(info.value)
    pids = await _read_pids(ws / "pids")
    assert len(pids) == 2
    for pid in pids:
        assert await _wait_dead(pid), f"child {pid} survived the timeout"


async def test_timeout_escalates_to_sigkill(ctx: ToolContext, ws: Path) -> None:
    # Ignoring SIGTERM is inherited by the background job: only SIGKILL stops it.
    cmd = "trap '' TERM; sleep 100 & echo $! > pids; wait"
    with pytest.raises(ToolError, match="timed out"):
        await call(run_shell, ctx, command=cmd, timeout=2)
    (pid,) = await _read_pids(ws / "pids")
    assert await _wait_dead(pid)


async def test_background_job_holding_output_does_not_hang(ctx: ToolContext, ws: Path) -> None:
    out = await call(run_shell, ctx, command="sleep 100 & echo $! > pids; echo started")
    assert out.startswith("started\nexit code 0")
    assert "background jobs" in out
    (pid,) = await _read_pids(ws / "pids")
    assert await _wait_dead(pid)


async def test_detached_background_job_is_left_running(ctx: ToolContext, ws: Path) -> None:
    out = await call(run_shell, ctx, command="sleep 100 >/dev/null 2>&1 & echo $! > pids")
    (pid,) = await _read_pids(ws / "pids")
    try:
        assert out == "(no output)\nexit code 0"
        assert _alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


async def test_cancelling_the_call_kills_the_group(ctx: ToolContext, ws: Path) -> None:
    task = asyncio.ensure_future(
        run_shell(ctx, run_shell.validate({"command": "sleep 100 & echo $! > pids; wait"}))
    )
    (pid,) = await _read_pids(ws / "pids")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_dead(pid)


async def test_large_output_is_capped_with_marker(ctx: ToolContext) -> None:
    ctx.output_limit = 2_000
    out = await call(run_shell, ctx, command="seq 1 200000")
    lines = out.splitlines()
    assert lines[0] == "1" and lines[-2] == "200000" and lines[-1] == "exit code 0"
    assert "bytes cut" in out
    assert len(out) <= ctx.output_limit
    # The registry's own limit must not cut it a second time.
    reg = ToolRegistry([run_shell])
    outcome = await reg.execute("run_shell", {"command": "seq 1 200000"}, ctx)
    assert outcome.ok and outcome.output.count("cut ...]") == 1


async def test_moderate_overflow_uses_truncate_marker(ctx: ToolContext) -> None:
    ctx.output_limit = 2_000
    out = await call(run_shell, ctx, command="seq 1 1000")  # ~3.9 KB: cut, not dropped
    assert "characters cut" in out and out.splitlines()[-2] == "1000"


async def test_shell_wrapper_seam(ctx: ToolContext) -> None:
    seen: list[list[str]] = []

    def wrap(argv: list[str]) -> list[str]:
        seen.append(list(argv))
        return ["/usr/bin/env", "WRAPPED=yes", *argv]

    ctx.services["shell_wrapper"] = wrap
    out = await call(run_shell, ctx, command="echo $WRAPPED")
    assert out == "yes\nexit code 0"
    assert seen == [["/bin/bash", "-c", "echo $WRAPPED"]]


async def test_broken_wrapper_is_a_tool_error(ctx: ToolContext) -> None:
    ctx.services["shell_wrapper"] = lambda argv: ["/nonexistent/bwrap", *argv]
    with pytest.raises(ToolError, match="could not start the command"):
        await call(run_shell, ctx, command="true")


async def test_bad_commands(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="empty"):
        await call(run_shell, ctx, command="   ")
    with pytest.raises(ToolError, match="NUL"):
        await call(run_shell, ctx, command="echo a\x00b")
    out = await call(run_shell, ctx, command="no-such-command-xyz")
    assert "command not found" in out and out.endswith("exit code 127")
    out = await call(run_shell, ctx, command="kill -9 $$")
    assert out.endswith("exit code -9 (killed by signal 9)")


async def test_non_utf8_ansi_and_carriage_returns(ctx: ToolContext) -> None:
    out = await call(
        run_shell, ctx, command=r"printf 'caf\xe9\n\e[31mred\e[0m\n10%%\r50%%\r100%%\n'"
    )
    assert out == "caf\ufffd\nred\n100%\nexit code 0"


def test_clean_output() -> None:
    assert clean_output(b"\x1b[1;32mok\x1b[0m\r\n") == "ok\n"
    assert clean_output(b"a\rb\rc\nd") == "c\nd"
    assert clean_output(b"\xff") == "\ufffd"


async def test_registry_reports_timeout_as_failure(ctx: ToolContext) -> None:
    reg = ToolRegistry([run_shell])
    outcome = await reg.execute("run_shell", {"command": "echo x; exit 1"}, ctx)
    assert outcome.ok and outcome.output == "x\nexit code 1"
    outcome = await reg.execute("run_shell", {"command": "sleep 30", "timeout": 1}, ctx)
    assert not outcome.ok and "timed out" in (outcome.error or "")
