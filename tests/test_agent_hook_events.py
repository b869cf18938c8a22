"""Every lifecycle hook fires in a real run (subagents, compaction), in Claude Code's shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from local_ai_router.agent.compaction import SUMMARY_PROMPT
from local_ai_router.agent.runner import RunRequest
from local_ai_router.runtime import Runtime
from local_ai_router.testing import Reply, ScriptedBackend, tool_call

EVENTS = [
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "Stop",
    "SessionEnd",
]


def reply(body: dict[str, Any]) -> Reply:
    messages = body["messages"]
    if messages[0]["content"] == SUMMARY_PROMPT:
        return Reply(content="Task: test hooks. Left: finish.")
    user = next(m["content"] for m in messages if m["role"] == "user")
    if user.startswith("child job"):
        return Reply(tool_calls=[tool_call("task_complete", {"answer": "child done"})])
    step = sum(1 for m in messages if m["role"] == "assistant")
    plan = [
        tool_call("run_shell", {"command": "echo hello"}),
        tool_call("read_file", {"path": "missing.txt"}),  # fails: PostToolUseFailure
        tool_call("spawn_agents", {"tasks": [{"prompt": "child job"}]}),
        tool_call("read_file", {"path": "big.txt"}),
        tool_call("read_file", {"path": "big.txt"}),
    ]
    if step < len(plan):
        return Reply(tool_calls=[plan[step]])
    return Reply(tool_calls=[tool_call("task_complete", {"answer": "all done"})])


async def test_all_hook_events_fire(make_settings, tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "big.txt").write_text("x" * 6000)
    log = tmp_path / "hooks"
    log.mkdir()
    # One file per hook call: hooks run in parallel, and appends to one file would interleave.
    command = f"cat > {log}/$$-$RANDOM.json"
    hooks = {
        event: [{"matcher": "", "hooks": [{"type": "command", "command": command}]}]
        for event in EVENTS
    }
    async with ScriptedBackend(default=reply, models=["m"], context_window=4096) as backend:
        settings = make_settings(
            backends=[{"name": "b", "url": backend.url, "kind": "vllm", "models": ["m"]}],
            agent={"workspace": str(ws), "hooks": hooks, "max_tokens": 256},
        )
        rt = Runtime.create(settings)
        await rt.start()
        try:
            active = await rt.agent.start_run(RunRequest(task="test hooks", workspace=ws))
            events = [e.to_dict() async for e in active.stream()]
        finally:
            await rt.stop()
    assert events[-1]["status"] == "completed", events[-1]
    payloads = [
        json.loads(f.read_text()) for f in sorted(log.iterdir(), key=lambda f: f.stat().st_mtime_ns)
    ]
    fired = {p["hook_event_name"] for p in payloads}
    assert fired >= set(EVENTS) - {"PreCompact"}
    if any(e["type"] == "compaction" for e in events):
        assert "PreCompact" in fired
    pre = next(p for p in payloads if p["hook_event_name"] == "PreToolUse")
    assert pre["tool_name"] == "Bash" and pre["tool_input"]["command"] == "echo hello"
    assert {"session_id", "cwd", "permission_mode"} <= set(pre)
    post = next(p for p in payloads if p["hook_event_name"] == "PostToolUse")
    assert "hello" in json.dumps(post["tool_response"])
    failure = next(p for p in payloads if p["hook_event_name"] == "PostToolUseFailure")
    assert failure["tool_name"] == "Read" and failure["tool_input"]["file_path"] == str(
        ws / "missing.txt"
    )
    assert not [e for e in events if e["type"] == "error" and e["kind"] == "hook"]
