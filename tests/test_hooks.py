"""Hooks: command, HTTP and Python hooks in Claude Code's shape, and the loop adapters.

Hook scripts here only inspect the payload they are given; nothing in a payload is run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from local_ai_router.agent.gate import ClaudeLoopHooks, LoopGate, PermissionGate
from local_ai_router.agent.hooks import (
    HookContext,
    HookRunner,
    claude_tool_name,
    from_claude_input,
    to_claude_input,
)
from local_ai_router.agent.permissions import PermissionPolicy
from local_ai_router.tools.registry import ToolOutcome

PY = sys.executable


def ctx(ws: Path, mode: str = "auto") -> HookContext:
    return HookContext("sess-1", ws, mode)


def cmd_hooks(event: str, *commands: str, matcher: str = "*", timeout: float | None = None
              ) -> dict[str, Any]:  # fmt: skip
    hooks = [{"type": "command", "command": c} for c in commands]
    if timeout is not None:
        for h in hooks:
            h["timeout"] = timeout
    return {event: [{"matcher": matcher, "hooks": hooks}]}


def script(ws: Path, name: str, body: str) -> Path:
    path = ws / ".claude" / "hooks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def py_hook(ws: Path, name: str, code: str) -> str:
    """A hook command running a small Python script (payload on stdin)."""
    path = script(ws, name, "import json, sys, os\npayload = json.load(sys.stdin)\n" + code)
    return f"{PY} {path}"


async def pre(runner: HookRunner, ws: Path, tool: str = "run_shell", **args: Any):
    return await runner.pre_tool_use(tool, args or {"command": "ls"}, ctx(ws), tool_use_id="t1")


# --------------------------------------------------------------------------- Claude Code scripts


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
async def test_claude_code_docs_script_runs_unchanged(tmp_path: Path):
    script(tmp_path, "block-rm.sh", """#!/bin/bash
COMMAND=$(jq -r '.tool_input.command')

if echo "$COMMAND" | grep -q 'rm -rf'; then
  echo "Blocked: rm -rf commands are not allowed" >&2
  exit 2
fi

exit 0
""")  # fmt: skip
    config = cmd_hooks(
        "PreToolUse", '"$CLAUDE_PROJECT_DIR"/.claude/hooks/block-rm.sh', matcher="Bash"
    )
    runner = HookRunner(config, workspace=tmp_path)
    blocked = await pre(runner, tmp_path, command="rm -rf build")
    assert blocked.permission_decision == "deny" and blocked.blocked
    assert blocked.reason == "Blocked: rm -rf commands are not allowed"
    assert blocked.outcomes[0].exit_code == 2 and blocked.outcomes[0].error is None
    passed = await pre(runner, tmp_path, command="ls -la")
    assert passed.permission_decision is None and not passed.blocked and not passed.errors


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
async def test_claude_code_json_deny_script(tmp_path: Path):
    script(tmp_path, "deny.sh", """#!/bin/bash
COMMAND=$(jq -r '.tool_input.command')
if echo "$COMMAND" | grep -q 'rm -rf'; then
  jq -n '{
    hookSpecificOutput: {
      hookEventName: "PreToolUse",
      permissionDecision: "deny",
      permissionDecisionReason: "Destructive command blocked by hook"
    }
  }'
else
  exit 0
fi
""")  # fmt: skip
    config = cmd_hooks("PreToolUse", '"$CLAUDE_PROJECT_DIR"/.claude/hooks/deny.sh', matcher="Bash")
    gate = PermissionGate(
        PermissionPolicy(workspace=tmp_path), HookRunner(config, workspace=tmp_path)
    )
    res = await gate.check("run_shell", {"command": "rm -rf build"}, context=ctx(tmp_path))
    assert (res.decision.decision, res.decision.by) == ("deny", "hook")
    assert res.decision.reason == "Destructive command blocked by hook"


async def test_python_version_of_the_blocking_script(tmp_path: Path):
    hook = py_hook(tmp_path, "block.py", """
command = payload.get("tool_input", {}).get("command", "")
if "rm -rf" in command:
    print("Blocked: rm -rf commands are not allowed", file=sys.stderr)
    sys.exit(2)
""")  # fmt: skip
    runner = HookRunner(cmd_hooks("PreToolUse", hook, matcher="Bash"), workspace=tmp_path)
    assert (await pre(runner, tmp_path, command="echo ok; rm -rf x")).permission_decision == "deny"


# --------------------------------------------------------------------------- payload


async def test_payload_is_claude_codes_shape(tmp_path: Path):
    dump = tmp_path / "payloads.jsonl"
    hook = py_hook(tmp_path, "dump.py", f"""
with open({str(dump)!r}, "a") as f:
    f.write(json.dumps({{"payload": payload, "cwd": os.getcwd(),
                         "project": os.environ.get("CLAUDE_PROJECT_DIR"),
                         "secret": os.environ.get("MY_API_KEY")}}) + "\\n")
""")  # fmt: skip
    env = {"PATH": os.environ["PATH"], "MY_API_KEY": "s3cret", "HOME": "/nowhere"}
    runner = HookRunner(cmd_hooks("PreToolUse", hook), workspace=tmp_path, env=env)
    c = HookContext("sess-9", tmp_path, "ask", transcript_path=None)
    await runner.pre_tool_use("run_shell", {"command": "ls", "timeout": 5}, c, tool_use_id="call_1")
    await runner.pre_tool_use("read_file", {"path": "src/a.py", "start_line": 3, "end_line": 7}, c)
    await runner.pre_tool_use("search_files", {"pattern": "TODO", "content_search": True}, c)
    await runner.pre_tool_use("search_files", {"pattern": "*.py"}, c)
    await runner.pre_tool_use("edit_file", {"path": "a", "old_string": "x", "new_string": "y"}, c)
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    first = rows[0]
    assert first["payload"] == {
        "session_id": "sess-9",
        "transcript_path": None,
        "cwd": str(tmp_path),
        "permission_mode": "default",  # our "ask" is Claude Code's "default"
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "ls", "timeout": 5000},
        "tool_use_id": "call_1",
    }
    assert first["cwd"] == os.path.realpath(tmp_path) and first["project"] == str(tmp_path)
    assert first["secret"] is None  # scrubbed
    read = rows[1]["payload"]
    assert read["tool_name"] == "Read"
    assert read["tool_input"] == {"file_path": str(tmp_path / "src/a.py"), "offset": 3, "limit": 5}
    assert [r["payload"]["tool_name"] for r in rows[2:]] == ["Grep", "Glob", "Edit"]
    assert rows[2]["payload"]["tool_input"]["path"] == str(tmp_path)
    assert rows[4]["payload"]["tool_input"]["file_path"] == str(tmp_path / "a")


def test_input_translation_round_trip(tmp_path: Path):
    args = {"path": "src/a.py", "start_line": 10, "end_line": 19}
    claude = to_claude_input("read_file", args, tmp_path)
    assert claude == {"file_path": str(tmp_path / "src/a.py"), "offset": 10, "limit": 10}
    assert from_claude_input("read_file", claude, args, tmp_path) == args
    back = from_claude_input("run_shell", {"command": "ls -1", "timeout": 30000}, {"command": "ls"},
                             tmp_path)  # fmt: skip
    assert back == {"command": "ls -1", "timeout": 30}
    out = from_claude_input("write_file", {"file_path": "/etc/x", "content": "c", "evil": 1},
                            {"path": "a", "content": "b"}, tmp_path)  # fmt: skip
    assert out == {"path": "/etc/x", "content": "c"}  # unknown keys dropped; outside stays absolute
    task = from_claude_input("spawn_agents", {"prompt": "p", "subagent_type": "Explore"}, {},
                             tmp_path)  # fmt: skip
    assert task["tasks"] == [{"prompt": "p", "description": None, "agent": "Explore"}]
    assert (
        claude_tool_name("spawn_agents") == "Task" and claude_tool_name("mcp__a__b") == "mcp__a__b"
    )


# --------------------------------------------------------------------------- exit codes and output


@pytest.mark.parametrize(
    ("code", "decision", "error"),
    [
        ('print(json.dumps({"hookSpecificOutput": {"permissionDecision": "allow"}}))', "allow",
         None),
        ('print(json.dumps({"hookSpecificOutput": {"permissionDecision": "ask"}}))', "ask",
         None),
        ('print(json.dumps({"decision": "block", "reason": "no"}))', "deny", None),
        ('print(json.dumps({"decision": "approve"}))', "allow", None),  # legacy spelling
        ('print("just some text")', None, None),
        ('print("[1, 2]")', None, None),
        ("pass", None, None),
        ('print("{not json")', None, "not valid JSON"),
        ('print(json.dumps({"hookSpecificOutput": {"permissionDecision": "maybe"}}))', None,
         "permissionDecision must be"),
        ('print(json.dumps({"hookSpecificOutput": "deny"}))', None, "must be an object"),
        ('print(json.dumps({"decision": "explode"}))', None, "unknown decision"),
        ('sys.stderr.write("oops"); sys.exit(1)', None, "exit code 1: oops"),
        ("raise SystemExit(3)", None, "exit code 3"),
        ("1/0", None, "ZeroDivisionError"),
        ('print(json.dumps({"hookSpecificOutput": {"permissionDecision": "deny"}})); sys.exit(1)',
         None, "exit code 1"),  # JSON is only read on exit 0
    ],
)  # fmt: skip
async def test_outputs_and_exit_codes(tmp_path: Path, code: str, decision: str | None,
                                      error: str | None):  # fmt: skip
    runner = HookRunner(
        cmd_hooks("PreToolUse", py_hook(tmp_path, "h.py", code)), workspace=tmp_path
    )
    result = await pre(runner, tmp_path)
    assert result.permission_decision == decision
    if error is None:
        assert not result.errors
    else:
        assert error in (result.outcomes[0].error or "")


async def test_exit_2_uses_stderr_and_ignores_stdout(tmp_path: Path):
    code = 'print(json.dumps({"hookSpecificOutput": {"permissionDecision": "allow"}}))\n'
    code += 'sys.stderr.write("use the test runner instead\\n"); sys.exit(2)'
    runner = HookRunner(
        cmd_hooks("PreToolUse", py_hook(tmp_path, "h.py", code)), workspace=tmp_path
    )
    r = await pre(runner, tmp_path)
    assert (r.permission_decision, r.reason) == ("deny", "use the test runner instead")


async def test_missing_command_is_a_reported_error(tmp_path: Path):
    runner = HookRunner(cmd_hooks("PreToolUse", "/no/such/hook-script"), workspace=tmp_path)
    r = await pre(runner, tmp_path)
    assert r.permission_decision is None and r.outcomes[0].exit_code == 127
    assert "exit code 127" in (r.outcomes[0].error or "")


async def test_json_fields(tmp_path: Path):
    answer = {
        "continue": False,
        "stopReason": "quota",
        "systemMessage": "warn the user",
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow",
            "updatedInput": {"command": "ls -la"},
            "additionalContext": "prefer rg",
        },
    }
    hook = py_hook(tmp_path, "h.py", f"print(json.dumps({answer!r}))")
    r = await pre(HookRunner(cmd_hooks("PreToolUse", hook), workspace=tmp_path), tmp_path)
    assert r.stop and r.stop_reason == "quota"
    assert r.system_messages == ["warn the user"] and r.additional_context == ["prefer rg"]
    assert r.updated_input == {"command": "ls -la"} and r.updated_args == {"command": "ls -la"}


# --------------------------------------------------------------------------- timeouts and crashes


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie waiting for init
    except FileNotFoundError:
        return True


async def _wait_dead(pid: int) -> bool:
    for _ in range(100):
        if _dead(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_timeout_kills_the_whole_process_group(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    command = f"sleep 300 & echo $! > {pidfile}; wait"
    runner = HookRunner(cmd_hooks("PreToolUse", command, timeout=0.5), workspace=tmp_path)
    r = await pre(runner, tmp_path)
    assert "timed out after 0.5s" in (r.outcomes[0].error or "")
    assert r.permission_decision is None
    assert await _wait_dead(int(pidfile.read_text()))


async def test_cancelling_kills_the_hook(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    command = f"sleep 300 & echo $! > {pidfile}; wait"
    runner = HookRunner(cmd_hooks("PreToolUse", command), workspace=tmp_path)
    task = asyncio.create_task(pre(runner, tmp_path))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_dead(int(pidfile.read_text()))


async def test_garbage_and_huge_output_do_not_crash(tmp_path: Path):
    code = 'sys.stdout.buffer.write(b"\\xff\\xfe{" + b"x" * 300000)'
    runner = HookRunner(
        cmd_hooks("PreToolUse", py_hook(tmp_path, "h.py", code)), workspace=tmp_path
    )
    r = await pre(runner, tmp_path)
    assert r.permission_decision is None and len(r.outcomes[0].output) <= 2000


# --------------------------------------------------------------------------- matchers


@pytest.mark.parametrize(
    ("matcher", "tool", "args", "fires"),
    [
        ("Bash", "run_shell", {"command": "ls"}, True),
        ("run_shell", "run_shell", {"command": "ls"}, True),
        ("Bash", "read_file", {"path": "a"}, False),
        ("Bas", "run_shell", {"command": "ls"}, False),  # plain names are exact
        ("Edit|Write", "write_file", {"path": "a"}, True),
        ("Edit|Write", "edit_file", {"path": "a"}, True),
        ("Edit|Write", "read_file", {"path": "a"}, False),
        ("Grep", "search_files", {"pattern": "x", "content_search": True}, True),
        ("Grep", "search_files", {"pattern": "x"}, False),
        ("Glob", "search_files", {"pattern": "x"}, True),
        ("Task", "spawn_agents", {"tasks": []}, True),
        ("Agent", "spawn_agents", {"tasks": []}, True),
        ("mcp__gh__.*", "mcp__gh__create", {}, True),
        ("mcp__gh__.*", "mcp__other__create", {}, False),
        ("mcp__gh", "mcp__gh__create", {}, False),  # exact name, as in Claude Code
        ("^Notebook", "run_shell", {"command": "ls"}, False),
        ("Ba.h", "run_shell", {"command": "ls"}, True),  # regex, unanchored
        ("*", "git_push", {}, True),
        ("", "git_push", {}, True),
    ],
)
async def test_matchers(tmp_path: Path, matcher: str, tool: str, args: dict[str, Any], fires: bool):
    seen: list[str] = []

    async def hook(payload: dict[str, Any]) -> None:
        seen.append(payload["tool_name"])

    runner = HookRunner(workspace=tmp_path)
    runner.register("PreToolUse", hook, matcher=matcher)
    await runner.pre_tool_use(tool, args, ctx(tmp_path))
    assert bool(seen) is fires


async def test_parallel_hooks_combine_deny_over_ask_over_allow(tmp_path: Path):
    runner = HookRunner(workspace=tmp_path)
    started: list[str] = []
    both = asyncio.Event()

    def answering(decision: str):
        async def hook(payload: dict[str, Any]) -> dict[str, Any]:
            started.append(decision)
            if len(started) == 3:
                both.set()
            await asyncio.wait_for(both.wait(), 5)  # only finishes if all run at once
            out = {"permissionDecision": decision, "permissionDecisionReason": decision}
            return {"hookSpecificOutput": out}

        return hook

    for d in ("allow", "deny", "ask"):
        runner.register("PreToolUse", answering(d))
    r = await pre(runner, tmp_path)
    assert (r.permission_decision, r.reason) == ("deny", "deny")
    assert sorted(o.decision or "" for o in r.outcomes) == ["allow", "ask", "deny"]


# --------------------------------------------------------------------------- python callables


async def test_python_callables(tmp_path: Path):
    runner = HookRunner(workspace=tmp_path)
    runner.register("PreToolUse", lambda p: {"decision": "block", "reason": "sync says no"})

    async def slow(payload: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    async def wrong(payload: dict[str, Any]) -> Any:
        return ["not", "a", "dict"]

    runner.register("PreToolUse", slow, timeout=0.2)
    runner.register("PreToolUse", wrong)
    r = await pre(runner, tmp_path)
    assert (r.permission_decision, r.reason) == ("deny", "sync says no")
    errors = sorted(o.error or "" for o in r.errors)
    assert errors == ["returned list; expected a dict or None", "timed out after 0.2s"]
    with pytest.raises(ValueError, match="unknown hook event"):
        runner.register("PreTool", slow)
    with pytest.raises(ValueError, match="callable"):
        runner.register("Stop", "not callable")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- http hooks


@pytest.fixture
async def hook_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def deny(request: Request) -> Response:
        received.append({"body": await request.json(), "auth": request.headers.get("x-token")})
        out = {"permissionDecision": "deny", "permissionDecisionReason": "http says no"}
        return JSONResponse({"hookSpecificOutput": out})

    async def fail(request: Request) -> Response:
        return PlainTextResponse("broken", status_code=500)

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    async def garbage(request: Request) -> Response:
        return PlainTextResponse("{oops")

    app = Starlette(routes=[Route(f"/{f.__name__}", f, methods=["POST"])
                            for f in (deny, fail, empty, garbage)])  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", received
    server.should_exit = True
    await task


async def test_http_hooks(hook_server: tuple[str, list[dict[str, Any]]], tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    base, received = hook_server
    monkeypatch.setenv("HOOK_TOKEN", "t0k")
    monkeypatch.setenv("OTHER_SECRET", "nope")
    config = {"PreToolUse": [{"matcher": "Bash", "hooks": [
        {"type": "http", "url": f"{base}/deny", "allowedEnvVars": ["HOOK_TOKEN"],
         "headers": {"X-Token": "Bearer $HOOK_TOKEN ${OTHER_SECRET}"}},
        {"type": "http", "url": f"{base}/fail"},
        {"type": "http", "url": f"{base}/empty"},
        {"type": "http", "url": f"{base}/garbage"},
        {"type": "http", "url": "http://127.0.0.1:9/closed", "timeout": 2},
    ]}]}  # fmt: skip
    r = await pre(HookRunner(config, workspace=tmp_path), tmp_path, command="make")
    assert (r.permission_decision, r.reason) == ("deny", "http says no")
    assert received[0]["body"]["tool_input"] == {"command": "make"}
    assert received[0]["body"]["hook_event_name"] == "PreToolUse"
    assert received[0]["auth"] == "Bearer t0k"  # only listed variables are expanded
    errors = [o.error or "" for o in r.outcomes]
    assert errors[1].startswith("HTTP 500") and errors[2] == ""
    assert "not valid JSON" in errors[3] and "HTTP request failed" in errors[4]


# --------------------------------------------------------------------------- other events


async def test_post_tool_use_and_failure(tmp_path: Path):
    dump = tmp_path / "post.jsonl"
    hook = py_hook(tmp_path, "post.py", f"""
open({str(dump)!r}, "a").write(json.dumps(payload) + "\\n")
if payload["hook_event_name"] == "PostToolUse":
    print(json.dumps({{"decision": "block", "reason": "lint failed: E501"}}))
else:
    sys.stderr.write("tests must pass"); sys.exit(2)
""")  # fmt: skip
    config = {**cmd_hooks("PostToolUse", hook), **cmd_hooks("PostToolUseFailure", hook)}
    runner = HookRunner(config, workspace=tmp_path)
    ok = await runner.post_tool_use("run_shell", {"command": "make"}, ctx(tmp_path), ok=True,
                                    output="built")  # fmt: skip
    assert ok.blocked and ok.block_reason == "lint failed: E501" and ok.permission_decision is None
    bad = await runner.post_tool_use("write_file", {"path": "a"}, ctx(tmp_path), ok=False,
                                     output="", error="disk full")  # fmt: skip
    assert bad.blocked and bad.block_reason == "tests must pass"
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert rows[0]["tool_response"] == {"stdout": "built", "stderr": "", "interrupted": False}
    assert rows[1]["hook_event_name"] == "PostToolUseFailure" and rows[1]["error"] == "disk full"


async def test_plain_stdout_is_context_for_prompt_and_session_events(tmp_path: Path):
    config = {**cmd_hooks("UserPromptSubmit", "echo branch: main"),
              **cmd_hooks("SessionStart", "echo remember X", matcher="startup")}  # fmt: skip
    runner = HookRunner(config, workspace=tmp_path)
    r = await runner.run("UserPromptSubmit", ctx(tmp_path), prompt="hi")
    assert r.additional_context == ["branch: main"]
    r = await runner.run("SessionStart", ctx(tmp_path), match=["resume"], source="resume")
    assert r.outcomes == []  # matcher compares the source
    r = await runner.run("SessionStart", ctx(tmp_path), match=["startup"], source="startup")
    assert r.additional_context == ["remember X"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"PreTool": []}, "unknown hook event 'PreTool'"),
        ({"PreToolUse": {}}, "must be a list"),
        ({"PreToolUse": [{"matcher": "Bash"}]}, "'hooks' list"),
        ({"PreToolUse": [{"matcher": "(", "hooks": []}]}, "not a valid regex"),
        ({"PreToolUse": [{"matcher": 3, "hooks": []}]}, "matcher must be a string"),
        ({"Stop": [{"hooks": [{"type": "command"}]}]}, "command must be a non-empty"),
        ({"Stop": [{"hooks": [{"type": "command", "command": "x", "timeout": 0}]}]}, "timeout"),
        ({"Stop": [{"hooks": [{"type": "command", "command": "x", "timeout": "9"}]}]}, "timeout"),
        ({"Stop": [{"hooks": [{"type": "http", "url": "ftp://x"}]}]}, "http(s) URL"),
        ({"Stop": [{"hooks": [{"type": "http", "url": "http://x", "headers": {"a": 1}}]}]},
         "headers"),
        ({"Stop": [{"hooks": [{"type": "carrier-pigeon"}]}]}, "type must be"),
        ({"Stop": ["x"]}, "must be an object"),
        (["PreToolUse"], "must map event names"),
    ],
)  # fmt: skip
def test_invalid_config_is_a_clear_error(tmp_path: Path, config: Any, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        HookRunner(config, workspace=tmp_path)


def test_claude_only_events_and_types_are_accepted_with_warnings(tmp_path: Path):
    config = {
        "Notification": [{"hooks": [{"type": "command", "command": "notify-send hi"}]}],
        "Stop": [{"hooks": [{"type": "prompt", "prompt": "are you done?"}]}],
    }
    runner = HookRunner(config, workspace=tmp_path)
    assert len(runner.warnings) == 2 and not runner.has("Stop")


# --------------------------------------------------------------------------- loop adapters


@dataclass
class FakeSpec:
    workspace: Path
    run_id: str = "run-1"
    session_id: str = "sess-1"
    permission_mode: str = "auto"
    parent_run_id: str | None = None


@dataclass
class FakeLoop:
    spec: FakeSpec
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def emit(self, type_: str, **data: Any) -> None:
        self.events.append((type_, data))


async def test_loop_gate_maps_to_the_seam_and_reports_hook_errors(tmp_path: Path):
    runner = HookRunner(cmd_hooks("PreToolUse", "exit 7"), workspace=tmp_path)

    async def rewrite(payload: dict[str, Any]) -> dict[str, Any]:
        out = {"updatedInput": {"command": "ls -1"}, "additionalContext": "note"}
        return {"hookSpecificOutput": out}

    runner.register("PreToolUse", rewrite)
    loop = FakeLoop(FakeSpec(tmp_path))
    gate = LoopGate(PermissionGate(PermissionPolicy(workspace=tmp_path), runner))
    verdict = await gate.check(loop, "run_shell", {"command": "ls"})  # type: ignore[arg-type]
    assert (verdict.decision, verdict.by, verdict.args) == ("allow", "mode", {"command": "ls -1"})
    assert verdict.additional_context == "note" and not verdict.stop
    assert loop.events[0][0] == "error" and loop.events[0][1]["kind"] == "hook"
    assert "exit code 7" in loop.events[0][1]["message"]
    assert gate.policy.mode == "auto"


async def test_claude_loop_hooks(tmp_path: Path):
    seen: list[dict[str, Any]] = []
    runner = HookRunner(workspace=tmp_path)

    async def record(payload: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(payload)
        if payload["hook_event_name"] == "Stop" and not payload["stop_hook_active"]:
            return {"decision": "block", "reason": "run the tests first"}
        if payload["hook_event_name"] == "UserPromptSubmit":
            return {"hookSpecificOutput": {"additionalContext": "ctx"}}
        return None

    for event in ("UserPromptSubmit", "PostToolUse", "Stop", "SubagentStop", "PreCompact",
                  "SessionEnd", "SessionStart", "SubagentStart"):  # fmt: skip
        runner.register(event, record)
    hooks = ClaudeLoopHooks(runner)
    loop = FakeLoop(FakeSpec(tmp_path))
    assert (await hooks.user_prompt_submit(loop, "do it")).additional_context == "ctx"  # type: ignore[arg-type]
    post = await hooks.post_tool(loop, "read_file", {"path": "a"}, ToolOutcome(True, "text"))  # type: ignore[arg-type]
    assert not post.block
    first = await hooks.stop(loop, "done")  # type: ignore[arg-type]
    second = await hooks.stop(loop, "done")  # type: ignore[arg-type]
    assert (first.block, first.reason) == (True, "run the tests first") and not second.block
    child = FakeLoop(FakeSpec(tmp_path, run_id="run-2", parent_run_id="run-1"))
    await hooks.stop(child, "child done")  # type: ignore[arg-type]
    await hooks.pre_compact(loop)  # type: ignore[arg-type]
    await hooks.session_start(loop)  # type: ignore[arg-type]
    await hooks.subagent_start(loop, "run-2", "Explore")  # type: ignore[arg-type]

    class Result:
        status = "completed"

    await hooks.session_end(loop, Result())  # type: ignore[arg-type]
    events = [p["hook_event_name"] for p in seen]
    assert events == ["UserPromptSubmit", "PostToolUse", "Stop", "Stop", "SubagentStop",
                      "PreCompact", "SessionStart", "SubagentStart", "SessionEnd"]  # fmt: skip
    assert seen[1]["tool_name"] == "Read" and seen[1]["tool_response"]["output"] == "text"
    assert seen[3]["stop_hook_active"] is True and seen[5]["trigger"] == "auto"
    assert seen[8]["reason"] == "completed"
