"""End-to-end agent runs over HTTP (/agent/*) against ScriptedBackend."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from local_ai_router.server import create_app
from local_ai_router.testing import Reply, ScriptedBackend, tool_call


def hermes(name: str, args: dict[str, Any]) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


async def agent_server(
    served, make_settings, backend: ScriptedBackend, workspace: Path, **agent: Any
):
    settings = make_settings(
        backends=[{"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["m"]}],
        agent={"workspace": str(workspace), **agent},
    )
    url = await served(create_app(settings))
    return httpx2.AsyncClient(base_url=url, timeout=30)


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            ev = json.loads(lines["data"])
            assert ev["type"] == lines["event"]
            events.append(ev)
    return events


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("the answer is 42\n")
    return ws


async def test_multi_step_run_over_sse_mixing_native_and_text(served, make_settings, workspace):
    script = [
        Reply(tool_calls=[tool_call("read_file", {"path": "notes.txt"})]),
        hermes("write_file", {"path": "out/answer.txt", "content": "42\n"}),
        "<think>check it</think>" + hermes("run_shell", {"command": "cat out/answer.txt"}),
        Reply(tool_calls=[tool_call("task_complete", {"answer": "wrote 42"})]),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        r = await http.post("/agent/run", json={"task": "copy the answer", "stream": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.text)
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert [e["seq"] for e in events] == list(range(len(events)))
    actions = [e["tool"] for e in events if e["type"] == "action"]
    assert actions == ["read_file", "write_file", "run_shell", "task_complete"]
    results = [e for e in events if e["type"] == "tool_result"]
    assert "the answer is 42" in results[0]["output"]
    assert "42" in results[2]["output"] and results[2]["ok"] is True
    assert (workspace / "out" / "answer.txt").read_text() == "42\n"
    final = events[-1]
    assert (
        final["status"] == "completed"
        and final["final_answer"] == "wrote 42"
        and final["steps"] == 4
    )
    # The model saw the tool result of step 1 in its second request.
    second = backend.requests[1]["messages"]
    assert any(m["role"] == "tool" and "the answer is 42" in m["content"] for m in second)


async def test_json_result_and_stored_run_with_steps(served, make_settings, workspace):
    script = [hermes("list_directory", {}), hermes("task_complete", {"answer": "one file"})]
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        r = await http.post("/agent/run", json={"task": "list"})
        body = r.json()
        assert set(body) == {"run_id", "session_id", "status", "final_answer", "steps", "usage"}
        assert body["status"] == "completed" and body["final_answer"] == "one file"
        run = (await http.get(f"/agent/runs/{body['run_id']}")).json()
        assert run["status"] == "completed" and [s["tool"] for s in run["steps"]] == [
            "list_directory",
            "task_complete",
        ]
        assert (await http.get("/agent/runs")).json()["runs"][0]["id"] == body["run_id"]
        session = (await http.get(f"/agent/sessions/{body['session_id']}")).json()
        roles = [m["role"] for m in session["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant", "tool"]
        assert session["runs"][0]["id"] == body["run_id"]


async def test_workspace_outside_roots_is_403(served, make_settings, workspace, tmp_path):
    async with ScriptedBackend(models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        r = await http.post("/agent/run", json={"task": "x", "workspace": str(outside)})
        assert r.status_code == 403 and r.json()["error"]["code"] == "workspace_forbidden"
        r = await http.post("/agent/run", json={"task": "x", "workspace": str(workspace / "..")})
        assert r.status_code == 403
        (workspace / "link").symlink_to(outside)
        r = await http.post("/agent/run", json={"task": "x", "workspace": str(workspace / "link")})
        assert r.status_code == 403
        assert backend.requests == []


async def test_a_keyless_caller_cannot_widen_the_permission_mode(served, make_settings, workspace):
    """The loopback API needs no key, so a model's own shell can reach it: without a key a
    run gets the configured mode or a stricter one, never bypassPermissions."""
    done = hermes("task_complete", {"answer": "ok"})
    async with ScriptedBackend(default=done, models=["m"]) as backend:
        http = await agent_server(
            served, make_settings, backend, workspace, permissions={"mode": "ask"}
        )
        for looser in ("bypassPermissions", "auto", "acceptEdits"):
            r = await http.post("/agent/run", json={"task": "x", "permission_mode": looser})
            assert r.status_code == 403 and r.json()["error"]["code"] == "mode_forbidden"
            assert "looser than the configured mode 'ask'" in r.json()["error"]["message"]
        assert backend.requests == []
        for ok in ("ask", "default", "plan", None):
            r = await http.post("/agent/run", json={"task": "x", "permission_mode": ok})
            assert r.status_code == 200 and r.json()["status"] == "completed"

    async with ScriptedBackend(default=done, models=["m"]) as backend:
        settings = make_settings(
            backends=[{"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["m"]}],
            agent={"workspace": str(workspace), "permissions": {"mode": "ask"}},
            server={"require_api_key": True},
        )
        app = create_app(settings)
        url = await served(app)
        _, key = await app.state.lar.keys.create("owner", ["agent"])
        async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.post(
                "/agent/run",
                json={"task": "x", "permission_mode": "bypassPermissions"},
                headers={"Authorization": f"Bearer {key}"},
            )
        assert r.status_code == 200  # a key holder chooses the mode


async def test_unknown_tool_and_bad_args_are_recovered(served, make_settings, workspace):
    script = [
        hermes("delete_everything", {}),
        Reply(tool_calls=[tool_call("read_file", {"pth": "notes.txt"})]),
        hermes("read_file", {"path": "notes.txt"}),
        hermes("task_complete", {"answer": "done"}),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        body = (await http.post("/agent/run", json={"task": "read"})).json()
    assert body["status"] == "completed"
    second = backend.requests[1]["messages"][-1]["content"]
    assert "delete_everything" in second and "read_file" in second  # names the tools available
    third = backend.requests[2]["messages"][-1]
    assert (
        third["role"] == "tool"
        and "path" in third["content"]
        and "Field required" in third["content"]
    )


async def test_three_invalid_actions_in_a_row_fail_the_run(served, make_settings, workspace):
    script = [hermes("nope", {})] * 3
    async with ScriptedBackend(script, models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        body = (await http.post("/agent/run", json={"task": "x"})).json()
    assert body["status"] == "failed" and body["steps"] == 3


async def test_two_messages_in_a_row_complete_with_text(served, make_settings, workspace):
    async with ScriptedBackend(["I think it is fine.", "It is fine."], models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        body = (await http.post("/agent/run", json={"task": "x"})).json()
    assert body == {**body, "status": "completed", "final_answer": "It is fine.", "steps": 2}
    assert "without calling a tool" in backend.requests[1]["messages"][-1]["content"]


async def test_max_steps(served, make_settings, workspace):
    async with ScriptedBackend(default=hermes("list_directory", {}), models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        body = (await http.post("/agent/run", json={"task": "x", "max_steps": 3})).json()
    assert body["status"] == "max_steps" and body["steps"] == 3 and len(backend.requests) == 3


async def test_cancel_a_running_run(served, make_settings, workspace):
    slow = Reply(content=hermes("list_directory", {}), delay=5)
    async with ScriptedBackend([hermes("list_directory", {}), slow], models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        events: list[dict[str, Any]] = []
        async with http.stream("POST", "/agent/run", json={"task": "x", "stream": True}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    events.append(ev)
                    if ev["type"] == "step_started" and ev["step"] == 2:
                        c = await http.post(f"/agent/runs/{ev['run_id']}/cancel")
                        assert c.status_code == 200
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "cancelled"
    stored = (await http.get(f"/agent/runs/{events[0]['run_id']}")).json()
    assert stored["status"] == "cancelled"


async def test_backend_down_fails_cleanly(served, make_settings, workspace):
    backend = await ScriptedBackend(models=["m"]).start()
    http = await agent_server(served, make_settings, backend, workspace)
    await backend.stop()
    body = (await http.post("/agent/run", json={"task": "x"})).json()
    assert body["status"] == "failed"
    run = (await http.get(f"/agent/runs/{body['run_id']}")).json()
    assert "model call failed" in run["error"]


async def test_bad_requests(served, make_settings, workspace):
    async with ScriptedBackend(models=["m"]) as backend:
        http = await agent_server(served, make_settings, backend, workspace)
        assert (await http.post("/agent/run", json={})).status_code == 400
        assert (
            await http.post("/agent/run", json={"task": "x", "max_steps": 0})
        ).status_code == 400
        assert (await http.post("/agent/run", content=b"{nope")).status_code == 400
        r = await http.post("/agent/run", json={"task": "x", "session_id": "ses_missing"})
        assert r.status_code == 404
        assert (await http.get("/agent/runs/run_nope")).status_code == 404
        assert (await http.post("/agent/runs/run_nope/cancel")).status_code == 404
        tools = (await http.get("/agent/tools")).json()["tools"]
        assert len(tools) == 20 and {t["name"] for t in tools} >= {
            "read_file",
            "task_complete",
            "spawn_agents",
        }
        await asyncio.sleep(0)
