"""Compaction keeps a long run inside a small real context window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_events
from local_ai_router.agent.compaction import SUMMARY_PROMPT, Compactor, estimate_messages
from local_ai_router.agent.runner import RunRequest
from local_ai_router.config import CompactionConfig
from local_ai_router.runtime import Runtime
from local_ai_router.testing import Reply, ScriptedBackend, tool_call

TASK = "Read big.txt repeatedly and report the checksum line. TASK-MARKER-7731"


def is_summary_request(body: dict[str, Any]) -> bool:
    first = body["messages"][0]
    return first["role"] == "system" and first["content"] == SUMMARY_PROMPT


def scripted_long_run(steps: int):
    """A callable script: read the big file ``steps`` times, then finish; answer summaries."""
    state = {"n": 0}

    def reply(body: dict[str, Any]) -> Reply:
        if is_summary_request(body):
            return Reply(
                content="Task: read big.txt. Done: read it several times. Left to do: finish."
            )
        state["n"] += 1
        if state["n"] > steps:
            return Reply(tool_calls=[tool_call("task_complete", {"answer": "checksum ok"})])
        return Reply(tool_calls=[tool_call("read_file", {"path": "big.txt"})])

    return reply


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    lines = [f"line {i:03d}: " + "lorem ipsum dolor sit amet " * 2 for i in range(40)]
    (ws / "big.txt").write_text("\n".join(lines)[:2400])
    return ws


async def run_long(
    make_settings, workspace: Path, steps: int, window: int
) -> tuple[Any, ScriptedBackend, list]:
    backend = ScriptedBackend(default=scripted_long_run(steps), models=["m"], context_window=window)
    async with backend:
        settings = make_settings(
            backends=[{"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["m"]}],
            agent={"workspace": str(workspace), "max_tokens": 512, "max_steps": steps + 5},
        )
        rt = Runtime.create(settings)
        await rt.start()
        try:
            active = await rt.agent.start_run(RunRequest(task=TASK, workspace=workspace))
            events = [ev.to_dict() async for ev in active.stream()]
            messages = await rt.agent_store.messages(active.loop.spec.session_id)
        finally:
            await rt.stop()
    return events, backend, messages


async def test_long_run_fits_a_4k_window_with_zero_rejections(make_settings, workspace):
    events, backend, stored = await run_long(make_settings, workspace, steps=30, window=4096)
    final = events[-1]
    assert final["type"] == "run_finished" and final["status"] == "completed", final
    assert backend.rejected == 0
    compactions = [e for e in events if e["type"] == "compaction"]
    assert compactions, "a 30-step run of 2.4 KB reads cannot fit 4K tokens without compaction"
    assert all(c["after_tokens"] < c["before_tokens"] for c in compactions)
    agent_requests = [r for r in backend.requests if not is_summary_request(r)]
    assert len(agent_requests) == 31
    for body in agent_requests:  # the task is never compacted away
        assert any(
            m["role"] == "user" and "TASK-MARKER-7731" in (m.get("content") or "")
            for m in body["messages"]
        )
        # a tool result always follows its call
        ids = [c["id"] for m in body["messages"] for c in m.get("tool_calls") or []]
        answered = {m.get("tool_call_id") for m in body["messages"] if m["role"] == "tool"}
        assert set(ids) <= answered
    # the stored session is the compacted conversation, still valid OpenAI chat
    assert stored[0]["role"] == "user" and "TASK-MARKER-7731" in stored[0]["content"]


async def test_server_rejection_compacts_harder_and_retries_once(make_settings, workspace):
    # The discovered window is a lie (kind openai: no discovery), the server enforces 3000.
    state = {"n": 0}

    def reply(body: dict[str, Any]) -> Reply:
        if is_summary_request(body):
            return Reply(content="Task: read big.txt. Left to do: finish.")
        state["n"] += 1
        if state["n"] > 12:
            return Reply(tool_calls=[tool_call("task_complete", {"answer": "done"})])
        return Reply(tool_calls=[tool_call("read_file", {"path": "big.txt"})])

    backend = ScriptedBackend(default=reply, models=["m"], context_window=3000, kind="openai")
    async with backend:
        settings = make_settings(
            backends=[{"name": "gpu", "url": backend.url, "kind": "openai", "models": ["m"]}],
            agent={"workspace": str(workspace), "max_tokens": 256},
        )
        events = await run_events(settings, RunRequest(task=TASK, workspace=workspace))
    assert events[-1]["status"] == "completed"
    errors = [e for e in events if e["type"] == "error" and e["kind"] == "context_length"]
    # each rejection was followed by a fitting retry
    assert errors and backend.rejected == len(errors)
    # After the first rejection the window is learned from vLLM's message and used proactively.
    assert len(errors) == 1


async def test_unfittable_request_fails_cleanly(make_settings, workspace):
    backend = ScriptedBackend(default="never", models=["m"], context_window=600, kind="openai")
    async with backend:
        settings = make_settings(
            backends=[{"name": "gpu", "url": backend.url, "kind": "openai", "models": ["m"]}],
            agent={"workspace": str(workspace), "max_tokens": 256},
        )
        events = await run_events(settings, RunRequest(task=TASK, workspace=workspace))
    final = events[-1]
    assert final["status"] == "failed" and "even after compaction" in final["error"]
    assert backend.rejected == 2  # one try, one harder retry, then stop: never a loop


class _FakeLoop:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.hooks = self

    async def pre_compact(self, loop: Any) -> None:
        self.events.append(("pre_compact", {}))

    def emit(self, type_: str, **data: Any) -> None:
        self.events.append((type_, data))


class _FailingModel:
    async def resolve(self, model: str) -> Any:
        raise AssertionError

    async def complete(self, body: dict[str, Any]) -> Any:
        raise RuntimeError("model down")


async def test_summary_failure_falls_back_and_never_splits_call_from_result():
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "task"},
    ]
    for i in range(40):  # too many for shortening alone: a summary is needed
        msgs.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": "{}"},
                    }
                ],
            }
        )
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": "x" * 2000})
    comp = Compactor(
        _FailingModel(),
        CompactionConfig(keep_recent_messages=4),
        model_name="m",
        window=3000,
        max_tokens=256,
    )
    loop = _FakeLoop()
    out = await comp.fit(loop, msgs, harder=False)  # type: ignore[arg-type]
    assert out[:2] == msgs[:2]
    assert "summary unavailable" in out[2]["content"]
    first_kept = out[4]
    assert first_kept["role"] != "tool"
    assert loop.events[0][0] == "pre_compact" and loop.events[-1][0] == "compaction"
    assert estimate_messages(out) < estimate_messages(msgs)
    json.dumps(out)


async def test_manual_compaction_endpoint(served, make_settings, workspace):
    import httpx2

    from local_ai_router.server import create_app

    steps = [Reply(tool_calls=[tool_call("read_file", {"path": "big.txt"})]) for _ in range(8)]

    def reply(body: dict[str, Any]) -> Reply:
        if is_summary_request(body):
            return Reply(content="Task: read big.txt. Done: read it 8 times.")
        return (
            steps.pop(0)
            if steps
            else Reply(tool_calls=[tool_call("task_complete", {"answer": "ok"})])
        )

    async with ScriptedBackend(default=reply, models=["m"], context_window=16384) as backend:
        settings = make_settings(
            backends=[{"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["m"]}],
            agent={"workspace": str(workspace)},
        )
        url = await served(create_app(settings))
        async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
            body = (await http.post("/agent/run", json={"task": TASK})).json()
            sid = body["session_id"]
            before = (await http.get(f"/agent/sessions/{sid}")).json()["messages"]
            r = await http.post(f"/agent/sessions/{sid}/compact")
            assert r.status_code == 200, r.text
            figures = r.json()
            after = (await http.get(f"/agent/sessions/{sid}")).json()["messages"]
            assert (await http.post("/agent/sessions/ses_nope/compact")).status_code == 404
    assert figures["after_tokens"] < figures["before_tokens"]
    assert figures["messages_before"] == len(before) and figures["messages_after"] == len(after)
    assert after[0] == before[0]  # the task stays
    assert sum(len(json.dumps(m)) for m in after) < sum(len(json.dumps(m)) for m in before)
