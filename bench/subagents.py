"""Subagents in parallel: the spawn step's wall time with 8 children of 1 s each.

Each child's model reply takes 1 s (a ScriptedBackend delay); the parent spawns 8
children in one action. Measured in one run: max_concurrent 8 (parallel) against
max_concurrent 1 (serial), and the ratio. Target: <= 1.3 s parallel (serial ~8 s).

    .venv/bin/python bench/subagents.py [--children 8] [--delay 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from local_ai_router.agent.runner import RunRequest
from local_ai_router.config import Settings
from local_ai_router.runtime import Runtime
from local_ai_router.testing import Reply, ScriptedBackend, tool_call

PARENT = "parent task"


def script(children: int, delay: float) -> Any:
    calls = {"parent": 0}

    def reply(body: dict[str, Any]) -> Reply:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if user == PARENT:
            calls["parent"] += 1
            if calls["parent"] % 2 == 1:
                tasks = [{"prompt": f"child {i}"} for i in range(children)]
                return Reply(tool_calls=[tool_call("spawn_agents", {"tasks": tasks})])
            return Reply(tool_calls=[tool_call("task_complete", {"answer": "done"})])
        return Reply(tool_calls=[tool_call("task_complete", {"answer": user})], delay=delay)

    return reply


async def spawn_step_seconds(backend: ScriptedBackend, home: Path, max_concurrent: int) -> float:
    settings = Settings.model_validate(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{home}/bench-{max_concurrent}.db"},
            "backends": [
                {
                    "name": "b",
                    "url": backend.url,
                    "kind": "vllm",
                    "models": ["m"],
                    "max_concurrent": 64,
                }
            ],
            "agent": {"workspace": str(home), "subagents": {"max_concurrent": max_concurrent}},
            "health": {"interval_s": 3600},
        }
    )
    rt = Runtime.create(settings)
    await rt.start()
    try:
        active = await rt.agent.start_run(RunRequest(task=PARENT, workspace=home))
        started = finished = None
        async for ev in active.stream():
            if (
                ev.type == "action"
                and ev.data.get("tool") == "spawn_agents"
                and ev.parent_run_id is None
            ):
                started = time.perf_counter()
            if (
                ev.type == "tool_result"
                and ev.data.get("tool") == "spawn_agents"
                and ev.parent_run_id is None
            ):
                finished = time.perf_counter()
        assert started and finished, "the spawn step did not complete"
        return finished - started
    finally:
        await rt.stop()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=8)
    ap.add_argument("--delay", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["LAR_HOME"] = str(home)
        async with ScriptedBackend(
            default=script(args.children, args.delay), models=["m"], record=False
        ) as backend:
            parallel = await spawn_step_seconds(backend, home, args.children)
            serial = await spawn_step_seconds(backend, home, 1)
    print(f"{args.children} children, {args.delay:g} s per child reply (ScriptedBackend)\n")
    print("| max_concurrent | spawn step wall time |")
    print("|---|---|")
    print(f"| {args.children} | {parallel:.2f} s |")
    print(f"| 1 (serial) | {serial:.2f} s |")
    print(
        f"\nspeed-up: {serial / parallel:.1f}x; overhead over one child: "
        f"{(parallel - args.delay) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
