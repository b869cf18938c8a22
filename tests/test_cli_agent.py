"""`lar chat` on a terminal, `lar mcp list`, `lar skills`: agent commands as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from pathlib import Path

import httpx2
import pytest
import yaml

from conftest import run_lar
from local_ai_router.testing import Reply, ScriptedBackend, tool_call

TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"


def config(tmp_path: Path, backend: ScriptedBackend | None = None, **extra: object) -> Path:
    tree: dict[str, object] = {
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/cli.db"},
        **extra,
    }
    if backend is not None:
        tree["backends"] = [backend.as_backend("b")]
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


async def read_until(master: int, marker: bytes, seen: bytearray, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    while marker not in seen:
        chunk = await asyncio.wait_for(loop.run_in_executor(None, os.read, master, 4096), timeout)
        if not chunk:
            raise AssertionError(f"terminal closed before {marker!r}; saw {bytes(seen)[-500:]!r}")
        seen.extend(chunk)


async def test_lar_chat_keeps_the_conversation(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    script = [
        Reply(tool_calls=[tool_call("task_complete", {"answer": "first answer"})]),
        Reply(tool_calls=[tool_call("task_complete", {"answer": "second answer"})]),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        cfg = config(tmp_path, backend)
        master, slave = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "local_ai_router",
            "chat",
            "-c",
            str(cfg),
            "-w",
            str(ws),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=tmp_path,
            env={**os.environ, "TERM": "dumb"},
        )
        os.close(slave)
        seen = bytearray()
        try:
            await read_until(master, b"you>", seen)
            os.write(master, b"hello there\r")
            await read_until(master, b"first answer", seen)
            await read_until(master, b"you>", seen)
            os.write(master, b"and again\r")
            await read_until(master, b"second answer", seen)
            await read_until(master, b"you>", seen)
            os.write(master, b"/exit\r")
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
            os.close(master)
    assert code == 0
    second = backend.requests[1]["messages"]
    assert [m.get("content") for m in second if m["role"] == "user"] == ["hello there", "and again"]


@pytest.mark.skipif(not TIME_SERVER.exists(), reason="run scripts/install_mcp_test_servers.sh")
async def test_lar_mcp_list(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": str(TIME_SERVER)},
                    "ghost": {"command": "/nonexistent/server"},
                }
            }
        )
    )
    cfg = config(tmp_path)
    code, out, err = await run_lar(
        "mcp", "list", "-c", str(cfg), "-w", str(ws), "--json", cwd=tmp_path
    )
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["time"]["status"] == "running"
    assert "mcp__time__get_current_time" in rows["time"]["tools"]
    assert rows["ghost"]["status"] == "failed" and rows["ghost"]["error"]
    (ws / ".mcp.json").write_text("{not json")
    code, _, err = await run_lar("mcp", "list", "-c", str(cfg), "-w", str(ws), cwd=tmp_path)
    assert code == 2 and ".mcp.json" in err and "Traceback" not in err


async def test_lar_skills(tmp_path: Path):
    skill = tmp_path / "ws" / ".claude" / "skills" / "deploy"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        "---\nname: deploy\ndescription: Deploy the app to staging.\n---\nSteps.\n"
    )
    cfg = config(tmp_path)
    ws = str(tmp_path / "ws")
    code, out, _ = await run_lar("skills", "list", "-c", str(cfg), "-w", ws, cwd=tmp_path)
    assert code == 0 and "deploy" in out
    code, out, _ = await run_lar(
        "skills", "search", "staging", "-c", str(cfg), "-w", ws, cwd=tmp_path
    )
    assert code == 0 and "deploy" in out
    code, out, _ = await run_lar("skills", "show", "deploy", "-c", str(cfg), "-w", ws, cwd=tmp_path)
    assert code == 0 and "Steps." in out
    code, _, err = await run_lar("skills", "show", "deplyo", "-c", str(cfg), "-w", ws, cwd=tmp_path)
    assert code == 1 and "did you mean: deploy" in err


async def test_lar_run_against_a_server_continues_forks_and_denies_when_headless(
    tmp_path: Path, served, make_settings
):
    """`lar run --server URL`: --continue and --fork mean what they mean in-process, and a
    client with no terminal gets asks denied at once (not after ask_timeout_s)."""
    from local_ai_router.server import create_app

    ws = tmp_path / "ws"
    ws.mkdir()

    def script(body: dict) -> Reply:
        last = body["messages"][-1]
        if last["role"] == "user":  # each task starts with an edit, which ask mode asks about
            return Reply(tool_calls=[tool_call("write_file", {"path": "x.txt", "content": "1"})])
        return Reply(tool_calls=[tool_call("task_complete", {"answer": last["content"][:200]})])

    async with ScriptedBackend(default=script, models=["m"]) as backend:
        settings = make_settings(
            backends=[backend.as_backend("b")],
            agent={
                "workspace": str(ws),
                "ask_timeout_s": 3600,  # a run that waited for an answer would hang the test
                "permissions": {"mode": "ask"},
            },
        )
        url = await served(create_app(settings))

        async def lar_run(task: str, *flags: str) -> dict:
            code, out, err = await run_lar(
                "run", task, "--server", url, "--workspace", str(ws), "--output", "json", *flags,
                cwd=tmp_path,
            )  # fmt: skip
            assert code == 0, err
            return json.loads(out)

        first = await lar_run("first task")
        assert first["status"] == "completed"
        assert "asked, but nobody can answer here" in first["final_answer"]
        assert not (ws / "x.txt").exists()

        second = await lar_run("second task", "--continue")
        assert second["session_id"] == first["session_id"]
        forked = await lar_run("third task", "--fork", first["session_id"])
        assert forked["session_id"] != first["session_id"]
        async with httpx2.AsyncClient(base_url=url) as http:
            copy = (await http.get(f"/agent/sessions/{forked['session_id']}")).json()
            listed = (await http.get("/agent/sessions", params={"workspace": str(ws)})).json()
            elsewhere = (await http.get("/agent/sessions", params={"workspace": "/nope"})).json()
            gone = await http.delete(f"/agent/sessions/{forked['session_id']}")
            after = await http.get(f"/agent/sessions/{forked['session_id']}")
            again = await http.delete(f"/agent/sessions/{forked['session_id']}")
        assert elsewhere == {"sessions": []}
        assert gone.json() == {"deleted": forked["session_id"]}
        assert (after.status_code, again.status_code) == (404, 404)
        texts = [m.get("content") for m in copy["messages"] if m["role"] == "user"]
        assert texts[:3] == ["first task", "second task", "third task"]
        assert listed["sessions"][0]["id"] == forked["session_id"]

        code, _, err = await run_lar(
            "run", "x", "--server", url, "--workspace", str(ws), "--fork", "ses_nope",
            cwd=tmp_path,
        )  # fmt: skip
        assert code != 0 and "session 'ses_nope' not found" in err
