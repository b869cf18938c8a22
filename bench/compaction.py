"""Tokens sent per step over a long run, with and without compaction.

A 200-step scripted run where every step reads a ~2,400-character file. With
compaction the backend enforces a 4,096-token window the way vLLM does (HTTP 400
beyond it); without compaction it has no limit, to show how the prompt grows.
Token counts are the ScriptedBackend's (characters / 4 of messages and tools).

    .venv/bin/python bench/compaction.py [--steps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from local_ai_router.agent.compaction import SUMMARY_PROMPT
from local_ai_router.agent.runner import RunRequest
from local_ai_router.config import Settings
from local_ai_router.runtime import Runtime
from local_ai_router.testing import Reply, ScriptedBackend, tool_call

TASK = "Read big.txt again and again; report when done."


def is_summary(body: dict[str, Any]) -> bool:
    return body["messages"][0].get("content") == SUMMARY_PROMPT


def script(steps: int) -> Any:
    n = {"steps": 0}

    def reply(body: dict[str, Any]) -> Reply:
        if is_summary(body):
            return Reply(
                content="Task: read big.txt repeatedly. Done: many reads. Left: keep reading."
            )
        n["steps"] += 1
        if n["steps"] > steps:
            return Reply(tool_calls=[tool_call("task_complete", {"answer": "done"})])
        return Reply(tool_calls=[tool_call("read_file", {"path": "big.txt"})])

    return reply


async def run(home: Path, steps: int, *, compaction: bool) -> dict[str, Any]:
    window = 4096 if compaction else None
    backend = ScriptedBackend(default=script(steps), models=["m"], context_window=window)
    async with backend:
        settings = Settings.model_validate(
            {
                "storage": {"url": f"sqlite+aiosqlite:///{home}/bench-{compaction}.db"},
                "backends": [{"name": "b", "url": backend.url, "kind": "vllm", "models": ["m"]}],
                "agent": {"workspace": str(home), "max_tokens": 512, "max_steps": steps + 5},
                "health": {"interval_s": 3600},
            }
        )
        rt = Runtime.create(settings)
        await rt.start()
        try:
            active = await rt.agent.start_run(RunRequest(task=TASK, workspace=home))
            events = [ev async for ev in active.stream()]
        finally:
            await rt.stop()
        sizes = [backend.tokens_estimate(b) for b in backend.requests if not is_summary(b)]
        summaries = sum(1 for b in backend.requests if is_summary(b))
    return {
        "status": events[-1].data["status"],
        "sizes": sizes,
        "rejected": backend.rejected,
        "compactions": sum(e.type == "compaction" for e in events),
        "summaries": summaries,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["LAR_HOME"] = str(home)
        lines = [f"line {i:03d}: " + "lorem ipsum dolor sit amet " * 2 for i in range(40)]
        (home / "big.txt").write_text("\n".join(lines)[:2400])
        on = await run(home, args.steps, compaction=True)
        off = await run(home, args.steps, compaction=False)
    marks = [
        s for s in (1, 2, 5, 10, 25, 50, 100, 150, 200, args.steps + 1) if s <= len(on["sizes"])
    ]
    print(f"{args.steps}-step run, each step reads a 2,400-character file; tokens = chars/4\n")
    print("| step | prompt tokens, compaction on (4,096 window) | prompt tokens, compaction off |")
    print("|---|---|---|")
    for s in sorted(set(marks)):
        off_s = f"{off['sizes'][s - 1]:,}" if s <= len(off["sizes"]) else "-"
        print(f"| {s} | {on['sizes'][s - 1]:,} | {off_s} |")
    print(f"| total sent | {sum(on['sizes']):,} | {sum(off['sizes']):,} |")
    print(f"| max request | {max(on['sizes']):,} | {max(off['sizes']):,} |")
    print(
        f"\ncompaction on: status {on['status']}, {on['rejected']} rejected requests, "
        f"{on['compactions']} compactions, {on['summaries']} summary requests"
    )
    print(
        f"compaction off: status {off['status']} (no window enforced; the backend reports none,"
        " so nothing is compacted)"
    )


if __name__ == "__main__":
    asyncio.run(main())
