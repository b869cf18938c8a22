"""MCP servers inside scripted agent runs: .mcp.json and config, deny rules, failures, crashes."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import EVERYTHING, run_events
from local_ai_router.agent.runner import RunRequest
from local_ai_router.testing import Reply, ScriptedBackend, tool_call

TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"
EVERYTHING_INSTALLED = EVERYTHING.exists() and shutil.which("node") is not None
needs_time = pytest.mark.skipif(
    not TIME_SERVER.exists(),
    reason="mcp-server-time missing: run scripts/install_mcp_test_servers.sh",
)

CRASHY = textwrap.dedent(
    """
    import os
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("crashy")

    @app.tool()
    def ping(text: str) -> str:
        \"\"\"Answer pong.\"\"\"
        return f"pong {text}"

    @app.tool()
    def crash() -> str:
        \"\"\"Exit the process at once.\"\"\"
        os._exit(3)

    app.run()
    """
)


def call(name: str, **args: Any) -> Reply:
    return Reply(tool_calls=[tool_call(name, args)])


FINISH = call("task_complete", answer="done")


async def run(make_settings, backend: ScriptedBackend, workspace: Path, **agent: Any) -> list[dict]:
    extra = agent.pop("mcp_servers", {})
    settings = make_settings(
        backends=[{"name": "b", "url": backend.url, "kind": "vllm", "models": ["m"]}],
        agent={"workspace": str(workspace), **agent},
        mcp_servers=extra,
    )
    return await run_events(settings, RunRequest(task="use mcp", workspace=workspace))


def tools_offered(backend: ScriptedBackend) -> set[str]:
    return {t["function"]["name"] for t in backend.requests[0]["tools"]}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def mcp_json(workspace: Path, servers: dict[str, Any]) -> None:
    (workspace / ".mcp.json").write_text(json.dumps({"mcpServers": servers}))


@needs_time
async def test_time_server_from_mcp_json_is_listed_and_called(make_settings, workspace):
    mcp_json(
        workspace, {"time": {"command": str(TIME_SERVER), "args": ["--local-timezone", "UTC"]}}
    )
    script = [call("mcp__time__get_current_time", timezone="UTC"), FINISH]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run(make_settings, backend, workspace)
    assert {"mcp__time__get_current_time", "mcp__time__convert_time"} <= tools_offered(backend)
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["ok"] and '"timezone"' in result["output"] and "UTC" in result["output"]
    assert events[-1]["status"] == "completed"


@needs_time
async def test_deny_rules_hold_for_mcp_tools(make_settings, workspace):
    mcp_json(workspace, {"time": {"command": str(TIME_SERVER)}})
    script = [
        call("mcp__time__convert_time", source_timezone="UTC", time="10:00", target_timezone="UTC"),
        call("mcp__time__get_current_time", timezone="UTC"),
        FINISH,
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run(
            make_settings,
            backend,
            workspace,
            permissions={"deny": ["mcp__time__convert_time"], "ask": ["mcp__time__*"]},
        )
    assert "mcp__time__convert_time" not in tools_offered(backend)  # a bare deny: not offered
    errors = [e for e in events if e["type"] == "error"]
    assert errors[0]["kind"] == "unknown_tool"  # calling it anyway is an unknown tool
    decision = next(e for e in events if e["type"] == "permission_decision")
    assert decision["tool"] == "mcp__time__get_current_time" and decision["decision"] == "deny"
    assert events[-1]["status"] == "completed"


async def test_a_server_that_fails_to_start_is_reported_and_the_run_goes_on(
    make_settings, workspace
):
    mcp_json(workspace, {"ghost": {"command": "/nonexistent/mcp-server"}})
    async with ScriptedBackend([FINISH], models=["m"]) as backend:
        events = await run(make_settings, backend, workspace)
    err = next(e for e in events if e["type"] == "error")
    assert err["kind"] == "mcp" and "ghost" in err["message"]
    assert events[-1]["status"] == "completed"


async def test_a_server_that_crashes_mid_run_is_restarted(make_settings, workspace, tmp_path):
    script_path = tmp_path / "crashy.py"
    script_path.write_text(CRASHY)
    servers = {"crashy": {"command": sys.executable, "args": [str(script_path)]}}
    script = [
        call("mcp__crashy__ping", text="a"),
        call("mcp__crashy__crash"),
        call("mcp__crashy__ping", text="b"),
        FINISH,
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run(make_settings, backend, workspace, mcp_servers=servers)
    results = [e for e in events if e["type"] == "tool_result"]
    assert results[0]["ok"] and "pong a" in results[0]["output"]
    assert not results[1]["ok"]
    assert results[2]["ok"] and "pong b" in results[2]["output"]
    assert events[-1]["status"] == "completed"


@pytest.mark.skipif(not EVERYTHING_INSTALLED, reason="run scripts/install_mcp_test_servers.sh")
@pytest.mark.parametrize(
    ("everything", "kind"), [("streamableHttp", "http"), ("sse", "sse")], indirect=["everything"]
)
async def test_everything_server_in_a_run_over_http_and_sse(
    make_settings, workspace, everything, kind
):
    script = [call("mcp__every__echo", message="hello over " + kind), FINISH]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run(
            make_settings,
            backend,
            workspace,
            mcp_servers={"every": {"type": kind, "url": everything}},
        )
    assert "mcp__every__echo" in tools_offered(backend)
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["ok"] and f"hello over {kind}" in result["output"]
    assert events[-1]["status"] == "completed"
