"""Subagents: isolation, definitions, depth, concurrency, failures, cancel, events and storage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from local_ai_router.agent.runner import RunRequest
from local_ai_router.agent.subagents import load_definitions, parse_definition_file
from local_ai_router.runtime import Runtime
from local_ai_router.testing import Reply, ScriptedBackend, tool_call

PARENT_TASK = "Investigate the repo. PARENT-SECRET-1234"


def user_text(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def tool_names(body: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools") or []}


def done(answer: str, delay: float = 0.0) -> Reply:
    return Reply(tool_calls=[tool_call("task_complete", {"answer": answer})], delay=delay)


def spawn(*tasks: dict[str, Any]) -> Reply:
    return Reply(tool_calls=[tool_call("spawn_agents", {"tasks": list(tasks)})])


class Script:
    """Parent: spawn once, then finish with what came back. Children: answer by prompt."""

    def __init__(self, tasks: list[dict[str, Any]], child: Any):
        self.tasks, self.child = tasks, child
        self.parent_calls = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        if user_text(body) == PARENT_TASK:
            self.parent_calls += 1
            if self.parent_calls == 1:
                return spawn(*self.tasks)
            result = body["messages"][-1]["content"]
            return done(f"children said: {result}")
        return self.child(body)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / ".claude" / "agents").mkdir(parents=True)
    (ws / ".claude" / "agents" / "reader.md").write_text(
        "---\nname: reader\ndescription: Reads files and reports.\ntools: Read, Grep\n"
        "model: small-m\nmaxTurns: 3\n---\nYou are a careful reader. READER-PROMPT\n"
    )
    return ws


async def run_parent(make_settings, backend: ScriptedBackend, workspace: Path, **sub: Any):
    settings = make_settings(
        backends=[
            {"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["big-m", "small-m"]}
        ],
        agent={"workspace": str(workspace), "model": "big-m", "subagents": sub},
    )
    rt = Runtime.create(settings)
    await rt.start()
    try:
        active = await rt.agent.start_run(RunRequest(task=PARENT_TASK, workspace=workspace))
        events = [e.to_dict() async for e in active.stream()]
        parent = await rt.agent_store.get_run(active.run_id)
    finally:
        await rt.stop()
    return events, parent


async def test_children_are_isolated_and_answers_come_back_together(make_settings, workspace):
    script = Script(
        [{"prompt": "count files A"}, {"prompt": "count files B"}],
        lambda body: done(f"answer for {user_text(body)[-1]}"),
    )
    async with ScriptedBackend(default=script, models=["big-m", "small-m"]) as backend:
        events, parent = await run_parent(make_settings, backend, workspace)
    final = events[-1]
    assert final["type"] == "run_finished" and final["status"] == "completed"
    assert "answer for A" in final["final_answer"] and "answer for B" in final["final_answer"]
    child_requests = [r for r in backend.requests if user_text(r) != PARENT_TASK]
    assert len(child_requests) == 2
    for r in child_requests:  # a child never sees the parent's conversation
        assert all("PARENT-SECRET" not in str(m.get("content")) for m in r["messages"])
    started = [e for e in events if e["type"] == "subagent_started"]
    finished = [e for e in events if e["type"] == "subagent_finished"]
    assert len(started) == 2 and {e["status"] for e in finished} == {"completed"}
    child_ids = {e["child_run_id"] for e in started}
    child_events = [e for e in events if e["run_id"] in child_ids]
    assert child_events and all(e["parent_run_id"] == parent["id"] for e in child_events)
    assert {c["run_id"] for c in parent["children"]} == child_ids  # stored and linked


async def test_definition_restricts_tools_and_routes_model(make_settings, workspace):
    script = Script([{"prompt": "read it", "agent": "reader"}], lambda body: done("read"))
    async with ScriptedBackend(default=script, models=["big-m", "small-m"]) as backend:
        events, _ = await run_parent(make_settings, backend, workspace)
    assert events[-1]["status"] == "completed"
    parent_req = backend.requests[0]
    child_req = next(r for r in backend.requests if user_text(r) == "read it")
    assert "spawn_agents" in tool_names(parent_req)
    assert tool_names(child_req) == {"read_file", "search_files", "task_complete"}
    assert child_req["model"] == "small-m" and parent_req["model"] == "big-m"
    assert "READER-PROMPT" in child_req["messages"][0]["content"]
    assert "reader: Reads files" in parent_req["messages"][0]["content"]  # listed for the parent


async def test_depth_limit_removes_the_tool(make_settings, workspace):
    script = Script([{"prompt": "nested"}], lambda body: done("leaf"))
    async with ScriptedBackend(default=script, models=["big-m", "small-m"]) as backend:
        events, _ = await run_parent(make_settings, backend, workspace, max_depth=1)
    assert events[-1]["status"] == "completed"
    child_req = next(r for r in backend.requests if user_text(r) == "nested")
    assert "spawn_agents" not in tool_names(child_req)
    assert "spawn_agents" in tool_names(backend.requests[0])


async def test_concurrency_limit(make_settings, workspace):
    tasks = [{"prompt": f"job {i}"} for i in range(4)]
    script = Script(tasks, lambda body: done("ok", delay=0.3))
    async with ScriptedBackend(default=script, models=["big-m", "small-m"]) as backend:
        events, _ = await run_parent(make_settings, backend, workspace, max_concurrent=2)
        assert backend.max_active == 2
    assert events[-1]["status"] == "completed"


async def test_a_failing_child_does_not_stop_its_siblings(make_settings, workspace):
    def child(body: dict[str, Any]) -> Reply:
        if user_text(body) == "bad job":
            return Reply(status=400, error_message="this child breaks")
        return done("fine")

    script = Script(
        [{"prompt": "good job"}, {"prompt": "bad job"}, {"prompt": "x", "agent": "nope"}], child
    )
    async with ScriptedBackend(default=script, models=["big-m", "small-m"]) as backend:
        events, _ = await run_parent(make_settings, backend, workspace)
    answer = events[-1]["final_answer"]
    assert "[1] agent=general status=completed" in answer and "fine" in answer
    assert "[2] agent=general status=failed" in answer and "this child breaks" in answer
    assert "unknown agent type 'nope'" in answer


async def test_cancelling_the_parent_cancels_children(make_settings, workspace):
    script = Script(
        [{"prompt": "slow 1"}, {"prompt": "slow 2"}], lambda body: done("late", delay=5)
    )
    async with ScriptedBackend(default=script, models=["big-m", "small-m"]) as backend:
        settings = make_settings(
            backends=[{"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["big-m"]}],
            agent={"workspace": str(workspace), "model": "big-m"},
        )
        rt = Runtime.create(settings)
        await rt.start()
        try:
            active = await rt.agent.start_run(RunRequest(task=PARENT_TASK, workspace=workspace))
            events = []
            async for ev in active.stream():
                events.append(ev.to_dict())
                if (
                    ev.type == "subagent_started"
                    and sum(e["type"] == "subagent_started" for e in events) == 2
                ):
                    rt.agent.cancel(active.run_id)
            children = [e["child_run_id"] for e in events if e["type"] == "subagent_started"]
            stored = [await rt.agent_store.get_run(c) for c in children]
        finally:
            await rt.stop()
    assert events[-1]["run_id"] == active.run_id and events[-1]["status"] == "cancelled"
    assert [s["status"] for s in stored] == ["cancelled", "cancelled"]
    await asyncio.sleep(0)


def test_claude_code_definition_file(tmp_path: Path):
    f = tmp_path / "reviewer.md"
    f.write_text(
        "---\nname: code-reviewer\ndescription: Reviews code\ntools: Read, Grep, Glob, Bash\n"
        "model: inherit\npermissionMode: plan\n---\n\nReview the diff.\n"
    )
    d = parse_definition_file(f)
    assert d.name == "code-reviewer" and d.tools == ("read_file", "search_files", "run_shell")
    assert d.model is None and d.permission_mode == "plan" and d.prompt == "Review the diff."
    (tmp_path / "agents" / "definitions").mkdir(parents=True)
    (tmp_path / "agents" / "definitions" / "broken.md").write_text("---\nname: [unclosed\n---\n")
    defs, problems = load_definitions(tmp_path, {"cfg-agent": {"description": "from config"}})
    assert {"general", "explore", "cfg-agent"} <= set(defs)
    assert problems and "broken.md" in problems[0]


@pytest.mark.parametrize(
    ("parent_mode", "definition_mode", "child_mode"),
    [
        ("plan", "bypassPermissions", "plan"),  # a repo's definition cannot loosen the mode
        ("ask", "auto", "ask"),
        ("auto", "plan", "plan"),  # but it can tighten it
        ("auto", None, "auto"),
        ("bypassPermissions", "default", "ask"),  # Claude Code's name for ask
    ],
)
async def test_a_child_never_runs_looser_than_its_parent(
    make_settings, workspace, parent_mode, definition_mode, child_mode
):
    mode_line = f"permissionMode: {definition_mode}\n" if definition_mode else ""
    (workspace / ".claude" / "agents" / "writer.md").write_text(
        f"---\nname: writer\ndescription: Writes.\n{mode_line}---\nWrite files.\n"
    )

    def child(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return done(body["messages"][-1]["content"])
        return Reply(tool_calls=[tool_call("write_file", {"path": "out.txt", "content": "x"})])

    script = Script([{"prompt": "write it", "agent": "writer"}], child)
    async with ScriptedBackend(default=script, models=["big-m", "small-m"]) as backend:
        settings = make_settings(
            backends=[{"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["big-m"]}],
            agent={
                "workspace": str(workspace),
                "model": "big-m",
                "permissions": {"mode": parent_mode},
            },
        )
        rt = Runtime.create(settings)
        await rt.start()
        try:
            active = await rt.agent.start_run(
                RunRequest(task=PARENT_TASK, workspace=workspace, interactive=False)
            )
            events = [e.to_dict() async for e in active.stream()]
            started = next(e for e in events if e["type"] == "subagent_started")
            stored = await rt.agent_store.get_run(started["child_run_id"])
        finally:
            await rt.stop()
    assert stored is not None
    result = next(e for e in events if e["type"] == "tool_result" and e["run_id"] == stored["id"])
    written = (workspace / "out.txt").exists()
    assert written == result["ok"] == (child_mode in ("auto", "bypassPermissions")), result
    if not written:
        assert f"{child_mode} mode" in result["error"], result


async def test_a_slow_child_times_out_and_a_long_answer_comes_back_truncated(
    make_settings, workspace
):
    def child(body: dict[str, Any]) -> Reply:
        if user_text(body) == "slow job":
            return done("too late", delay=5)
        return done("START" + "x" * 20_000 + "END")

    script = Script([{"prompt": "slow job"}, {"prompt": "long job"}], child)
    async with ScriptedBackend(default=script, models=["big-m", "small-m"]) as backend:
        events, _ = await run_parent(make_settings, backend, workspace, timeout_s=0.5)
    answer = events[-1]["final_answer"]
    assert "[1] agent=general status=timeout" in answer and "no answer within 0.5s" in answer
    assert "too late" not in answer
    assert "[2] agent=general status=completed" in answer
    assert "START" in answer and "END" in answer and "characters cut ..." in answer
    assert len(answer) < 6000  # the parent's context gets the head and tail, not 20,000 chars
    finished = {e["status"] for e in events if e["type"] == "subagent_finished"}
    assert finished == {"timeout", "completed"}
