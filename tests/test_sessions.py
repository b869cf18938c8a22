"""Sessions: completed steps survive kill -9; resume, fork, continue; dangling calls repaired."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from conftest import run_lar
from local_ai_router.testing import Reply, ScriptedBackend, tool_call

LAR = [sys.executable, "-m", "local_ai_router"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, backend: ScriptedBackend, workspace: Path, port: int = 0) -> Path:
    cfg = {
        "server": {"port": port},
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/sessions.db"},
        "backends": [{"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["m"]}],
        "agent": {"workspace": str(workspace)},
        "health": {"interval_s": 3600},
    }
    path = tmp_path / "lar.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Server:
    """``lar serve`` as a real subprocess (so it can be killed with SIGKILL)."""

    def __init__(self, config: Path, port: int):
        self.config, self.port = config, port
        self.proc: asyncio.subprocess.Process | None = None
        self.url = f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *LAR,
            "serve",
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        async with httpx2.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("lar serve did not start")

    async def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("alpha\n")
    return ws


@pytest.fixture
async def server_factory() -> AsyncIterator[Any]:
    servers: list[Server] = []

    async def make(config: Path, port: int) -> Server:
        s = Server(config, port)
        await s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        await s.stop()


async def test_kill9_mid_run_loses_no_completed_step_and_resumes(
    tmp_path, workspace, server_factory
):
    steps = [
        Reply(
            tool_calls=[tool_call("write_file", {"path": f"f{i}.txt", "content": str(i)})],
            delay=0.15,
        )
        for i in range(8)
    ]
    backend = ScriptedBackend(steps, models=["m"])
    async with backend:
        port = free_port()
        config = write_config(tmp_path, backend, workspace, port)
        server = await server_factory(config, port)
        results: list[dict[str, Any]] = []
        async with httpx2.AsyncClient(base_url=server.url, timeout=30) as http:
            try:
                async with http.stream(
                    "POST", "/agent/run", json={"task": "write files", "stream": True}
                ) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            ev = json.loads(line[6:])
                            results.append(ev)
                            if sum(e["type"] == "tool_result" for e in results) == 3:
                                await server.kill9()
                                break
            except httpx2.HTTPError:
                pass  # the connection died with the server
        session_id = results[0]["session_id"]
        run_id = results[0]["run_id"]
        completed = sum(e["type"] == "tool_result" for e in results)
        assert completed == 3

        server = await server_factory(config, port)  # restart on the same database
        async with httpx2.AsyncClient(base_url=server.url, timeout=30) as http:
            session = (await http.get(f"/agent/sessions/{session_id}")).json()
            stored_results = [m for m in session["messages"] if m["role"] == "tool"]
            assert len(stored_results) >= completed  # every completed step is there
            run = (await http.get(f"/agent/runs/{run_id}")).json()
            assert run["status"] == "interrupted"
            backend.add(Reply(tool_calls=[tool_call("task_complete", {"answer": "resumed"})]))
            backend.set_default(
                Reply(tool_calls=[tool_call("task_complete", {"answer": "resumed"})])
            )
            body = (
                await http.post("/agent/run", json={"task": "finish up", "session_id": session_id})
            ).json()
            assert body["status"] == "completed" and body["session_id"] == session_id
    last = backend.requests[-1]["messages"]
    assert last[1] == {"role": "user", "content": "write files"}  # the whole conversation is resent
    assert last[-1]["content"] == "finish up" or any(m.get("content") == "finish up" for m in last)
    ids = [c["id"] for m in last for c in m.get("tool_calls") or []]
    answered = {m.get("tool_call_id") for m in last if m["role"] == "tool"}
    assert set(ids) <= answered  # a valid request even if the kill landed mid-tool


async def test_cli_resume_continue_and_fork(tmp_path, workspace):
    finish = Reply(tool_calls=[tool_call("task_complete", {"answer": "ok"})])
    backend = ScriptedBackend(default=finish, models=["m"])
    async with backend:
        config = write_config(tmp_path, backend, workspace)
        code, out, err = await run_lar(
            "run", "first task", "-c", str(config), "-w", str(workspace), "-o", "json", cwd=tmp_path
        )
        assert code == 0, err
        first = json.loads(out)
        sid = first["session_id"]

        code, out, _ = await run_lar(
            "run",
            "second task",
            "-c",
            str(config),
            "-w",
            str(workspace),
            "-o",
            "json",
            "--resume",
            sid,
            cwd=tmp_path,
        )
        assert code == 0 and json.loads(out)["session_id"] == sid
        contents = [m.get("content") for m in backend.requests[-1]["messages"]]
        assert "first task" in contents and "second task" in contents

        code, out, _ = await run_lar(
            "run",
            "third task",
            "-c",
            str(config),
            "-w",
            str(workspace),
            "-o",
            "json",
            "--continue",
            cwd=tmp_path,
        )
        assert code == 0 and json.loads(out)["session_id"] == sid

        code, out, _ = await run_lar(
            "run",
            "forked task",
            "-c",
            str(config),
            "-w",
            str(workspace),
            "-o",
            "json",
            "--fork",
            sid,
            cwd=tmp_path,
        )
        forked = json.loads(out)["session_id"]
        assert code == 0 and forked != sid
        contents = [m.get("content") for m in backend.requests[-1]["messages"]]
        assert "third task" in contents and "forked task" in contents

        code, out, _ = await run_lar(
            "sessions", "show", sid, "-c", str(config), "--json", cwd=tmp_path
        )
        original = json.loads(out)
        assert "forked task" not in [m.get("content") for m in original["messages"]]  # it diverged
        code, out, _ = await run_lar("sessions", "list", "-c", str(config), "--json", cwd=tmp_path)
        assert {s["id"] for s in json.loads(out)} >= {sid, forked}
        code, _, _ = await run_lar("sessions", "rm", forked, "-c", str(config), cwd=tmp_path)
        assert code == 0
        code, _, err = await run_lar("sessions", "show", forked, "-c", str(config), cwd=tmp_path)
        assert code == 1 and "not found" in err
        code, _, err = await run_lar(
            "run",
            "x",
            "-c",
            str(config),
            "-w",
            str(workspace),
            "--resume",
            "ses_nope",
            cwd=tmp_path,
        )
        assert code == 2 and "not found" in err and "Traceback" not in err


async def test_dangling_tool_call_is_repaired_on_resume(make_settings, workspace):
    from local_ai_router.agent.runner import RunRequest
    from local_ai_router.runtime import Runtime

    finish = Reply(tool_calls=[tool_call("task_complete", {"answer": "ok"})])
    async with ScriptedBackend(default=finish, models=["m"]) as backend:
        settings = make_settings(
            backends=[{"name": "gpu", "url": backend.url, "kind": "vllm", "models": ["m"]}],
            agent={"workspace": str(workspace)},
        )
        rt = Runtime.create(settings)
        await rt.start()
        try:
            sid = await rt.agent_store.create_session(str(workspace), "crashed")
            crashed = [
                {"role": "user", "content": "do it"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_x",
                            "type": "function",
                            "function": {
                                "name": "run_shell",
                                "arguments": '{"command": "sleep 100"}',
                            },
                        }
                    ],
                },
            ]
            await rt.agent_store.replace_messages(sid, crashed)
            active = await rt.agent.start_run(
                RunRequest(task="continue", workspace=workspace, session_id=sid)
            )
            events = [e.to_dict() async for e in active.stream()]
            stored = await rt.agent_store.messages(sid)
        finally:
            await rt.stop()
    assert events[-1]["status"] == "completed"
    sent = backend.requests[0]["messages"]
    repair = sent[3]
    assert (
        repair["role"] == "tool"
        and repair["tool_call_id"] == "call_x"
        and "interrupted" in repair["content"]
    )
    assert stored[2]["role"] == "tool" and stored[2]["tool_call_id"] == "call_x"
