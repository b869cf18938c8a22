"""The bubblewrap sandbox: the workspace is writable, the rest of the system is not,
and there is no network unless asked for. Real bwrap runs; skipped only without bwrap."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest

from local_ai_router.agent.sandbox import (
    MISSING_MESSAGE,
    bwrap_argv,
    bwrap_wrapper,
    check_bwrap,
    probe_bwrap,
)
from local_ai_router.tools.registry import ToolContext, ToolRegistry
from local_ai_router.tools.shell import run_shell
from local_ai_router.types import ConfigError

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


def test_missing_bwrap_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="bwrap needs bubblewrap: apt-get install bubblewrap"):
        check_bwrap("no-such-bwrap-binary")
    with pytest.raises(ConfigError) as err:
        bwrap_wrapper(tmp_path, bwrap="no-such-bwrap-binary")
    assert MISSING_MESSAGE in str(err.value)


def test_argv_shape(tmp_path: Path):
    ws = str(tmp_path.resolve())
    assert bwrap_argv(tmp_path, bwrap="bwrap") == [
        "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--bind", ws, ws, "--chdir", ws, "--unshare-all", "--new-session", "--die-with-parent",
        "--",
    ]  # fmt: skip
    assert "--share-net" in bwrap_argv(tmp_path, network=True)
    assert "--share-net" not in bwrap_argv(tmp_path)


@needs_bwrap
def test_wrapper_prefixes_the_command(tmp_path: Path):
    wrap = bwrap_wrapper(tmp_path)
    argv = wrap(["/bin/bash", "-c", "true"])
    assert argv[-4:] == ["--", "/bin/bash", "-c", "true"]
    assert argv[0] == shutil.which("bwrap")
    with pytest.raises(ValueError, match="nothing to run"):
        wrap([])


async def run(argv: list[str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@needs_bwrap
async def test_probe(tmp_path: Path):
    await probe_bwrap(tmp_path)


@needs_bwrap
async def test_writes_inside_the_workspace_succeed(tmp_path: Path):
    wrap = bwrap_wrapper(tmp_path)
    code, out = await run(wrap(["/bin/bash", "-c", "echo hi > inside.txt && pwd"]), tmp_path)
    assert code == 0, out
    assert (tmp_path / "inside.txt").read_text() == "hi\n"
    assert out.strip() == str(tmp_path.resolve())


@needs_bwrap
async def test_writes_outside_the_workspace_fail(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = Path("/var/tmp") / f"lar-sandbox-{uuid.uuid4().hex}"
    sibling = tmp_path / "sibling.txt"
    wrap = bwrap_wrapper(ws)
    try:
        code, out = await run(wrap(["/bin/bash", "-c", f"echo x > {outside}"]), ws)
        assert code != 0 and "Read-only file system" in out
        assert not outside.exists()
        # next to the workspace: bwrap made its parents on the private /tmp, so even
        # where the write "works" it never reaches the host
        await run(wrap(["/bin/bash", "-c", f"echo x > {sibling}"]), ws)
        assert not sibling.exists()
        # /tmp is a private tmpfs: writes there vanish with the sandbox
        name = f"/tmp/lar-sandbox-{uuid.uuid4().hex}"
        code, out = await run(wrap(["/bin/bash", "-c", f"echo x > {name} && cat {name}"]), ws)
        assert code == 0 and out == "x\n" and not Path(name).exists()
    finally:
        outside.unlink(missing_ok=True)


async def _can_connect(wrap_network: bool | None, tmp_path: Path) -> bool:
    """Connect from the (sandboxed) child to a listener on the host's loopback."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # bash's /dev/tcp, not Python: the interpreter may live under /tmp, which the sandbox
    # replaces with an empty tmpfs (CI clones the repository there).
    argv = ["/bin/bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && exit 0 || exit 3"]
    if wrap_network is not None:
        argv = bwrap_wrapper(tmp_path, network=wrap_network)(argv)
    try:
        rc, _ = await run(argv, tmp_path)
    finally:
        server.close()
        await server.wait_closed()
    return rc == 0


@needs_bwrap
async def test_network_is_off_by_default_and_on_when_asked(tmp_path: Path):
    assert await _can_connect(None, tmp_path)  # the listener works without a sandbox
    assert not await _can_connect(False, tmp_path)
    assert await _can_connect(True, tmp_path)


@needs_bwrap
async def test_run_shell_uses_the_wrapper_service(tmp_path: Path):
    ctx = ToolContext(workspace=tmp_path, services={"shell_wrapper": bwrap_wrapper(tmp_path)})
    tools = ToolRegistry([run_shell])
    inside = await tools.execute("run_shell", {"command": "touch made.txt && echo ok"}, ctx)
    assert inside.ok and "exit code 0" in inside.output and (tmp_path / "made.txt").exists()
    target = Path("/var/tmp") / f"lar-sandbox-{uuid.uuid4().hex}"
    try:
        out = await tools.execute("run_shell", {"command": f"touch {target}"}, ctx)
        assert "Read-only file system" in out.output and not target.exists()
    finally:
        target.unlink(missing_ok=True)
