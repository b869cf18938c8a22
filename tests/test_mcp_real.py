"""MCP against real third-party servers: PyPI ``mcp-server-time`` over stdio and
npm ``@modelcontextprotocol/server-everything`` over streamable HTTP and SSE, plus
small stdio servers written here that crash, hang or print their environment.

The third-party servers come from ``scripts/install_mcp_test_servers.sh``; their
tests are skipped (with that reason) only when it has not been run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from local_ai_router.mcp import McpManager
from local_ai_router.mcp_config import McpServerConfig
from local_ai_router.tools.registry import ToolContext, ToolRegistry
from local_ai_router.types import ToolError

ROOT = Path(__file__).resolve().parents[1]
TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"
EVERYTHING = ROOT / "tests/.npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
INSTALL = "run scripts/install_mcp_test_servers.sh"

needs_time = pytest.mark.skipif(
    not TIME_SERVER.exists(), reason=f"mcp-server-time missing: {INSTALL}"
)
needs_everything = pytest.mark.skipif(
    not EVERYTHING.exists() or shutil.which("node") is None,
    reason=f"server-everything (or node) missing: {INSTALL}",
)


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path)


def live_children(pattern: str) -> list[int]:
    """Our child processes (any depth) whose command line matches, zombies included."""
    me, found = os.getpid(), []
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdlines[int(entry.name)] = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            )
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    for pid, cmd in cmdlines.items():
        p = pid
        while p in parents and p != me and p > 1:
            p = parents[p]
        if p == me and pid != me and re.search(pattern, cmd):
            found.append(pid)
    return found


# ------------------------------------------------------------------ mcp-server-time (stdio)


@needs_time
async def test_time_server_over_stdio(ctx: ToolContext) -> None:
    config = McpServerConfig("time", command=str(TIME_SERVER), args=["--local-timezone", "UTC"])
    async with McpManager([config]) as manager:
        assert await manager.start() == []
        tools = {t.name: t for t in manager.tools()}
        assert {"mcp__time__get_current_time", "mcp__time__convert_time"} <= set(tools)
        now = tools["mcp__time__get_current_time"]
        assert now.read_only and now.parameters["required"] == ["timezone"]

        registry = ToolRegistry(manager.tools())
        outcome = await registry.execute(now.name, now.validate({"timezone": "UTC"}), ctx)
        assert outcome.ok, outcome.error
        answer = json.loads(outcome.output)
        assert answer["timezone"] == "UTC"
        assert datetime.fromisoformat(answer["datetime"]).utcoffset().total_seconds() == 0

        # Bad arguments: caught by the validator before the server ...
        with pytest.raises(ToolError, match=r"missing required timezone.*Expected: mcp__time__"):
            now.validate({"zone": "UTC"})
        # ... and, when they get past it, the server's own error comes back as a failure.
        bad = await registry.execute(now.name, {"timezone": "Mars/Olympus_Mons"}, ctx)
        assert not bad.ok and "Mars/Olympus_Mons" in (bad.error or "")
        status = await manager.status()
        assert status[0]["status"] == "running" and now.name in status[0]["tools"]
    assert live_children("mcp-server-time") == []  # stopped, and reaped


# ------------------------------------------------------------ server-everything (HTTP, SSE)


@needs_everything
@pytest.mark.parametrize(
    ("everything", "kind"), [("streamableHttp", "http"), ("sse", "sse")], indirect=["everything"]
)
async def test_everything_server_over_http_and_sse(
    everything: str, kind: str, ctx: ToolContext
) -> None:
    config = McpServerConfig("every", type=kind, url=everything, headers={"X-Test": "1"})  # type: ignore[arg-type]
    async with McpManager([config]) as manager:
        assert await manager.start() == []
        registry = ToolRegistry(manager.tools())
        assert "mcp__every__echo" in registry and "mcp__every__get-tiny-image" in registry

        echo = await registry.execute("mcp__every__echo", {"message": "hello over " + kind}, ctx)
        assert (echo.ok, echo.output) == (True, f"Echo: hello over {kind}")

        image = await registry.execute("mcp__every__get-tiny-image", {}, ctx)
        assert image.ok
        m = re.search(r"\[image: image/png, (\d+) bytes\]", image.output)
        assert m and int(m.group(1)) > 100
        assert "data:" not in image.output and len(image.output) < 500  # no base64 for the model

        structured = await registry.execute(
            "mcp__every__get-structured-content", {"location": "Chicago"}, ctx
        )
        assert structured.ok and "temperature" in json.loads(structured.output)

        missing = await registry.execute("mcp__every__echo", {}, ctx)
        assert not missing.ok and "message" in (missing.error or "")


# ---------------------------------------------------------- crashing and hanging servers

CRASHY = textwrap.dedent(
    """
    import os, sys
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("crashy")
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")

    @app.tool()
    def ping(text: str) -> str:
        \"\"\"Answer pong.\"\"\"
        return f"pong {text}"

    @app.tool()
    def env(name: str) -> str:
        \"\"\"One environment variable, or <unset>.\"\"\"
        return os.environ.get(name, "<unset>")

    @app.tool()
    def crash() -> str:
        \"\"\"Exit the process at once.\"\"\"
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)

    app.run()
    """
)


def crashy_config(tmp_path: Path, **extra: object) -> tuple[McpServerConfig, Path]:
    script, pids = tmp_path / "crashy.py", tmp_path / "pids"
    script.write_text(CRASHY)
    return McpServerConfig(
        "crashy", command=sys.executable, args=[str(script), str(pids)], **extra
    ), pids  # type: ignore[arg-type]


def pid_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_crashing_server_is_survived_and_restarted(tmp_path: Path, ctx: ToolContext) -> None:
    config, pids = crashy_config(tmp_path)
    async with McpManager([config]) as manager:
        assert await manager.start() == []
        registry = ToolRegistry(manager.tools())
        assert (await registry.execute("mcp__crashy__ping", {"text": "1"}, ctx)).output == "pong 1"

        crashed = await registry.execute("mcp__crashy__crash", {}, ctx)
        assert not crashed.ok
        assert "MCP server 'crashy' is not running" in (crashed.error or "")
        assert "restarted on the next call" in (crashed.error or "")
        status = (await manager.status())[0]
        assert status["status"] == "failed" and "crashing on purpose" in status["error"]

        again = await registry.execute("mcp__crashy__ping", {"text": "2"}, ctx)
        assert (again.ok, again.output) == (True, "pong 2")
        assert (await manager.status())[0]["status"] == "running"
        first, second = (int(p) for p in pids.read_text().split())
        assert first != second and pid_gone(first)
    assert pid_gone(second)


async def test_stdio_env_is_scrubbed_plus_explicit_env(
    tmp_path: Path, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARENT_API_KEY", "must-not-leak")
    monkeypatch.setenv("PARENT_PLAIN", "visible")
    config, _ = crashy_config(tmp_path, env={"GIVEN_TOKEN": "passed-on-purpose"})
    async with McpManager([config]) as manager:
        await manager.start()
        tool = next(t for t in manager.tools() if t.name == "mcp__crashy__env")
        assert await tool(ctx, {"name": "PARENT_API_KEY"}) == "<unset>"
        assert await tool(ctx, {"name": "PARENT_PLAIN"}) == "visible"
        assert await tool(ctx, {"name": "GIVEN_TOKEN"}) == "passed-on-purpose"


async def test_missing_command_and_startup_timeout_are_reported(tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text("import sys\nsys.stdin.read()\n")  # never answers, exits on EOF
    crashy, _ = crashy_config(tmp_path)
    configs = [
        McpServerConfig("ghost", command=str(tmp_path / "no-such-server")),
        McpServerConfig("mute", command=sys.executable, args=[str(silent)], startup_timeout_s=1),
        crashy,
    ]
    async with McpManager(configs) as manager:
        failures = {f.server: f.error for f in await manager.start()}
        assert set(failures) == {"ghost", "mute"}
        assert "command not found" in failures["ghost"] and "no-such-server" in failures["ghost"]
        assert failures["mute"].startswith("did not start within 1s")
        # The run goes on with the server that did start.
        assert {t.name for t in manager.tools()} == {
            "mcp__crashy__ping",
            "mcp__crashy__env",
            "mcp__crashy__crash",
        }
    assert live_children(r"silent\.py|crashy\.py") == []
