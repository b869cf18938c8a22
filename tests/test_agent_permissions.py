"""The permission gate inside real runs: rules, modes, asking (HTTP and terminal), hooks, audit."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from local_ai_router.server import create_app
from local_ai_router.testing import Reply, ScriptedBackend, tool_call


def call(name: str, **args: Any) -> Reply:
    return Reply(tool_calls=[tool_call(name, args)])


FINISH = call("task_complete", answer="done")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


async def server(served, make_settings, backend: ScriptedBackend, workspace: Path, **agent: Any):
    settings = make_settings(
        backends=[{"name": "b", "url": backend.url, "kind": "vllm", "models": ["m"]}],
        agent={"workspace": str(workspace), **agent},
    )
    url = await served(create_app(settings))
    return httpx2.AsyncClient(base_url=url, timeout=30)


async def stream_run(
    http: httpx2.AsyncClient, body: dict[str, Any], answer: Any = None
) -> list[dict]:
    """Run over SSE; ``answer(event)`` may return an approval body for permission requests."""
    events: list[dict[str, Any]] = []
    async with http.stream("POST", "/agent/run", json={**body, "stream": True}) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            events.append(ev)
            if ev["type"] == "permission_request" and answer is not None:
                reply = answer(ev)
                if reply is not None:
                    res = await http.post(
                        f"/agent/runs/{ev['run_id']}/approvals/{ev['request_id']}", json=reply
                    )
                    assert res.status_code == 200, res.text
    return events


def of(events: list[dict], type_: str) -> list[dict]:
    return [e for e in events if e["type"] == type_]


async def test_ask_mode_over_http_allow_remember_and_deny(served, make_settings, workspace):
    script = [
        call("write_file", path="a.txt", content="1"),
        call("write_file", path="a.txt", content="2"),
        call("write_file", path="c.txt", content="3"),
        FINISH,
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await server(served, make_settings, backend, workspace)
        answers = iter([{"decision": "allow", "remember": True}, {"decision": "deny"}])
        events = await stream_run(
            http, {"task": "write", "permission_mode": "ask"}, lambda ev: next(answers)
        )
    requests = of(events, "permission_request")
    decisions = of(events, "permission_decision")
    # a.txt: asked and remembered; a.txt again: allowed by the session rule; c.txt: asked, denied.
    assert [r["args"]["path"] for r in requests] == ["a.txt", "c.txt"]
    assert [(d["decision"], d["by"]) for d in decisions[:3]] == [
        ("allow", "user"),
        ("allow", "rule"),
        ("deny", "user"),
    ]
    assert decisions[0]["request_id"] == requests[0]["request_id"]
    assert (workspace / "a.txt").read_text() == "2" and not (workspace / "c.txt").exists()
    assert events[-1]["status"] == "completed"


async def test_ask_denied_by_user_and_nobody_to_answer(served, make_settings, workspace):
    async with ScriptedBackend(
        [call("write_file", path="a.txt", content="1"), FINISH], models=["m"]
    ) as backend:
        http = await server(served, make_settings, backend, workspace)
        events = await stream_run(
            http, {"task": "w", "permission_mode": "ask"}, lambda ev: {"decision": "deny"}
        )
        denied = of(events, "tool_result")[0]
        assert not denied["ok"] and "permission denied" in denied["error"]
        assert not (workspace / "a.txt").exists()
        backend.add(call("write_file", path="a.txt", content="1"), FINISH)
        body = (await http.post("/agent/run", json={"task": "w", "permission_mode": "ask"})).json()
        run = (await http.get(f"/agent/runs/{body['run_id']}")).json()
        assert "nobody can answer" in run["steps"][0]["output"]
        assert not (workspace / "a.txt").exists()


async def test_unanswered_ask_times_out_as_deny(served, make_settings, workspace):
    async with ScriptedBackend(
        [call("run_shell", command="touch x"), FINISH], models=["m"]
    ) as backend:
        http = await server(served, make_settings, backend, workspace, ask_timeout_s=0.3)
        events = await stream_run(http, {"task": "t", "permission_mode": "ask"})
    decision = of(events, "permission_decision")[0]
    assert decision["decision"] == "deny" and "no answer within" in decision["reason"]
    assert not (workspace / "x").exists()


async def test_rules_guard_and_audit_rows(served, make_settings, workspace):
    script = [
        call("run_shell", command="echo ok && rm -rf ~"),
        call("run_shell", command="git push --force"),
        call("read_file", path=".env"),
        call("run_shell", command="echo fine"),
        FINISH,
    ]
    (workspace / ".env").write_text("SECRET=1")
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await server(
            served,
            make_settings,
            backend,
            workspace,
            permissions={"deny": ["Read(./.env)", "Write"]},
        )
        body = (await http.post("/agent/run", json={"task": "x"})).json()
        run = (await http.get(f"/agent/runs/{body['run_id']}")).json()
        tools = {t["function"]["name"] for t in backend.requests[0]["tools"]}
    outputs = [s["output"] for s in run["steps"]]
    assert "permission denied" in outputs[0]  # the guard list: rm -rf ~ inside a compound command
    assert "permission denied" in outputs[1] and "nobody can answer" in outputs[1]  # risky: asks
    assert "permission denied" in outputs[2]  # a Read deny rule
    assert "fine" in outputs[3]
    assert "write_file" not in tools  # a bare deny removes the tool
    from local_ai_router.store.agent_store import AgentStore
    from local_ai_router.store.db import Database

    db = await Database(make_settings().storage.url).open()
    rows = await AgentStore(db).audit_rows(body["run_id"])
    await db.close()
    assert [r["decision"] for r in rows] == ["deny", "deny", "deny", "allow", "allow"]
    assert rows[0]["by"] == "rule" and rows[0]["reason"].startswith("guard")
    assert rows[2]["by"] == "rule"


async def test_plan_mode_blocks_writes(served, make_settings, workspace):
    script = [
        call("write_file", path="a.txt", content="1"),
        call("run_shell", command="ls"),
        FINISH,
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await server(served, make_settings, backend, workspace)
        body = (await http.post("/agent/run", json={"task": "x", "permission_mode": "plan"})).json()
        run = (await http.get(f"/agent/runs/{body['run_id']}")).json()
    assert "permission denied" in run["steps"][0]["output"] and run["steps"][1]["ok"] is True
    assert not (workspace / "a.txt").exists()


POST_NOTE = json.dumps({"hookSpecificOutput": {"additionalContext": "POST-NOTE"}})

CLAUDE_STYLE_HOOK = """#!/bin/bash
# Block dangerous commands (as in Claude Code's hooks documentation).
command=$(jq -r '.tool_input.command')
if echo "$command" | grep -q 'curl'; then
  echo "Blocked: network downloads are not allowed in this repo" >&2
  exit 2
fi
exit 0
"""


@pytest.mark.skipif(
    shutil.which("jq") is None, reason="jq not installed (scripts/setup.sh installs it)"
)
async def test_claude_code_hook_script_runs_unchanged(served, make_settings, workspace, tmp_path):
    hook = tmp_path / "block-curl.sh"
    hook.write_text(CLAUDE_STYLE_HOOK)
    hook.chmod(0o755)
    script = [
        call("run_shell", command="curl -s http://127.0.0.1:9/x"),
        call("run_shell", command="echo hi"),
        FINISH,
    ]
    hooks = {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": str(hook)}]}],
        "PostToolUse": [
            {
                "matcher": "Bash",
                "hooks": [
                    {
                        "type": "command",
                        "command": f"echo '{POST_NOTE}'",
                    }
                ],
            }
        ],
    }
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await server(served, make_settings, backend, workspace, hooks=hooks)
        body = (await http.post("/agent/run", json={"task": "x"})).json()
    assert body["status"] == "completed"
    blocked = backend.requests[1]["messages"][-1]
    assert blocked["role"] == "tool" and "network downloads are not allowed" in blocked["content"]
    after_echo = backend.requests[2]["messages"][-1]["content"]
    assert "hi" in after_echo and "POST-NOTE" in after_echo


async def test_claude_settings_are_opt_in(served, make_settings, workspace):
    (workspace / ".claude").mkdir()
    (workspace / ".claude" / "settings.json").write_text(
        json.dumps({"permissions": {"deny": ["Bash"]}})
    )
    async with ScriptedBackend(default=FINISH, models=["m"]) as backend:
        http = await server(served, make_settings, backend, workspace)
        await http.post("/agent/run", json={"task": "x"})
        assert "run_shell" in {t["function"]["name"] for t in backend.requests[-1]["tools"]}
    async with ScriptedBackend(default=FINISH, models=["m"]) as backend:
        http = await server(served, make_settings, backend, workspace, load_claude_settings=True)
        await http.post("/agent/run", json={"task": "x"})
        assert "run_shell" not in {t["function"]["name"] for t in backend.requests[-1]["tools"]}
        (workspace / ".claude" / "settings.json").write_text("{broken")
        r = await http.post("/agent/run", json={"task": "x"})
        assert r.status_code == 400 and "settings.json" in r.json()["error"]["message"]


async def test_files_that_run_commands_next_time_are_always_asked_about(
    served, make_settings, workspace
):
    """In auto mode a model may write files freely, except .mcp.json and Claude settings:
    they would start commands in the next run. Headless, that ask is a deny."""
    (workspace / "sub").mkdir()
    attempts = [
        call("write_file", path=".mcp.json", content='{"mcpServers": {}}'),
        call("write_file", path="./sub/../.mcp.json", content="{}"),
        call("write_file", path=str(workspace / ".claude" / "settings.json"), content="{}"),
        call("write_file", path=".claude/settings.local.json", content="{}"),
        call("write_file", path="notes.txt", content="fine"),
        call("write_file", path="sub/.mcp.json", content="{}"),  # not the workspace's
        FINISH,
    ]
    async with ScriptedBackend(attempts, models=["m"]) as backend:
        http = await server(served, make_settings, backend, workspace)
        events = await stream_run(http, {"task": "set things up", "interactive": False})
        results = [e["ok"] for e in of(events, "tool_result")][:6]
        assert results == [False, False, False, False, True, True], of(events, "tool_result")
        denied = of(events, "tool_result")[0]["error"]
        assert "Edit(/.mcp.json)" in denied and "nobody can answer" in denied
        assert not (workspace / ".mcp.json").exists() and not (workspace / ".claude").exists()

    async with ScriptedBackend([attempts[0], FINISH], models=["m"]) as backend:
        http = await server(
            served, make_settings, backend, workspace, permissions={"mode": "bypassPermissions"}
        )
        events = await stream_run(http, {"task": "x", "interactive": False})
        assert of(events, "tool_result")[0]["ok"] and (workspace / ".mcp.json").exists()


@pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap not installed (scripts/setup.sh)"
)
async def test_sandboxed_shell_cannot_write_outside_the_workspace(
    served, make_settings, workspace, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    script = [
        call("run_shell", command=f"echo x > {outside}/pwned; echo y > inside.txt; echo done"),
        FINISH,
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await server(served, make_settings, backend, workspace, sandbox="bwrap")
        body = (await http.post("/agent/run", json={"task": "x"})).json()
    assert body["status"] == "completed"
    assert not (outside / "pwned").exists()
    assert (workspace / "inside.txt").read_text() == "y\n"
    shell_output = backend.requests[1]["messages"][-1]["content"]
    assert "Read-only file system" in shell_output or "No such file or directory" in shell_output


async def test_terminal_prompt_in_a_pty(tmp_path, workspace):
    """`lar run --permission-mode ask` on a terminal asks; typing y lets the write happen."""
    script = [call("write_file", path="t.txt", content="tty"), FINISH]
    async with ScriptedBackend(script, models=["m"]) as backend:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/t.db"},
                    "backends": [
                        {"name": "b", "url": backend.url, "kind": "vllm", "models": ["m"]}
                    ],
                }
            )
        )
        master, slave = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "local_ai_router",
            "run",
            "write it",
            "-c",
            str(cfg),
            "-w",
            str(workspace),
            "--permission-mode",
            "ask",
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=tmp_path,
            env={**os.environ, "COLUMNS": "200", "TERM": "dumb"},
        )
        os.close(slave)
        seen = b""
        loop = asyncio.get_running_loop()
        try:
            while b"[a]lways" not in seen:
                chunk = await asyncio.wait_for(
                    loop.run_in_executor(None, os.read, master, 4096), 60
                )
                if not chunk:
                    break
                seen += chunk
            assert b"allow write_file" in seen
            os.write(master, b"y\n")
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
            os.close(master)
    assert code == 0
    assert (workspace / "t.txt").read_text() == "tty"
