"""Agent runs on the real embedded model (llama.cpp + SmolLM2-135M): real inference, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from local_ai_router.agent.runner import RunRequest
from local_ai_router.backends.embedded import (
    EmbeddedBackend,
    bundled_model_path,
    llama_cpp_available,
)
from local_ai_router.runtime import Runtime

pytestmark = [
    pytest.mark.realmodel,
    pytest.mark.skipif(
        not (llama_cpp_available() and bundled_model_path() is not None),
        reason="needs the [local] extra: pip install 'local-ai-router[local]'",
    ),
]

PARSE_FAILURES = {"unknown_tool", "bad_json"}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    return ws


async def test_lar_run_constrained_every_reply_is_a_valid_action(tmp_path, workspace):
    """`lar run` with no backend configured: the embedded model, constrained mode, 3+ steps."""
    env = {**os.environ, "LAR_HOME": str(tmp_path / "home")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "local_ai_router",
        "run",
        "Read calc.py and explain the add function.",
        "--workspace",
        str(workspace),
        "--tool-mode",
        "constrained",
        "--max-steps",
        "3",
        "--output",
        "stream-json",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert events and events[-1]["type"] == "run_finished", err.decode()[-2000:]
    final = events[-1]
    steps = final["steps"]
    acted = [e for e in events if e["type"] in ("action", "message")]
    failures = [e for e in events if e["type"] == "error" and e["kind"] in PARSE_FAILURES]
    assert failures == []  # the grammar made every reply a valid, known action
    assert len(acted) == steps  # every step produced exactly one action or message
    assert steps == 3 and final["status"] in ("max_steps", "completed")  # three real steps
    bad_args = [
        e
        for e in events
        if e["type"] == "tool_result"
        and not e["ok"]
        and "invalid arguments" in (e.get("error") or "")
    ]
    assert bad_args == []  # tool-specific argument schemas held too


async def test_killing_llama_cpp_mid_run_is_survived(make_settings, workspace):
    settings = make_settings(agent={"workspace": str(workspace), "max_tokens": 64})
    rt = Runtime.create(settings)
    await rt.start()
    try:
        backend = rt.gateway.router.states["embedded"].backend
        assert isinstance(backend, EmbeddedBackend)
        first_pid = backend.server.pid
        active = await rt.agent.start_run(
            RunRequest(
                task="List the files.", workspace=workspace, max_steps=4, tool_mode="constrained"
            )
        )
        killed = False
        events = []
        async for ev in active.stream():
            events.append(ev.to_dict())
            if ev.type == "step_started" and not killed:  # the first model call is in flight
                os.killpg(first_pid, signal.SIGKILL)  # the model server dies mid-run
                killed = True
        final = events[-1]
        assert killed and final["type"] == "run_finished"
        assert final["status"] in ("failed", "max_steps", "completed")  # ended cleanly either way
        if final["status"] == "failed":
            assert "model call failed" in final["error"]
        state = rt.gateway.router.states["embedded"]
        for _ in range(600):  # the supervisor restarts it and marks it healthy once it answers
            if backend.server.pid != first_pid and state.healthy:
                break
            await asyncio.sleep(0.1)
        assert backend.server.pid != first_pid and state.healthy
        again = await rt.agent.start_run(
            RunRequest(
                task="List the files.", workspace=workspace, max_steps=1, tool_mode="constrained"
            )
        )
        after = [e.to_dict() async for e in again.stream()]
        assert after[-1]["status"] in ("max_steps", "completed"), after[-1].get("error")
    finally:
        await rt.stop()
