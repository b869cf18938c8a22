"""Agent loop overhead per step: ours vs. the OpenAI Agents SDK vs. a raw httpx2 loop.

One scripted upstream (``ScriptedBackend`` in its own process) plays a 50-step task: each
step the model calls ``read_file`` on a small file, the last step ``task_complete``. The
upstream reads the step from the conversation, so every runner gets the same script. Each
runner works in its own process (the same machine, the same upstream, one run of this script):

* ours: a :class:`~local_ai_router.runtime.Runtime` built from Settings, in-process
  (``rt.agent.start_run(...)``, events consumed from ``active.stream()``), with persistence
  (SQLite in a temp dir) and the runner's permission gate, exactly as ``lar run`` wires it;
* the OpenAI Agents SDK (``openai-agents``, its own venv under ``bench/.venvs``): an Agent
  with equivalent function tools, ``Runner.run(..., max_turns=60)``, tracing disabled,
  ``OpenAIChatCompletionsModel`` on ``AsyncOpenAI(base_url=upstream)``;
* raw: an httpx2 loop (POST, parse the tool call, run the same tool, append messages).

Per-step time = wall time of a whole run / steps; the median over runs is reported.

    .venv/bin/python bench/agent_loop.py           # full run (< 1 min after the one-time install)
    .venv/bin/python bench/agent_loop.py --quick   # smoke run (< 30 s; the SDK only if installed)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c

SDK_SPEC = os.environ.get("BENCH_AGENTS_SPEC", "openai-agents==0.24.0")
MODEL = "bench-model"
TASK = "Read notes.txt again and again until you are sure of the answer, then report it."
SYSTEM = "You are a coding agent. Call exactly one tool each turn; finish with task_complete."
ANSWER = c.AGENT_ANSWER
TARGET_MS, TARGET_RATIO = 3.0, 5.0
RAW_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a text file in the workspace.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "task_complete",
            "description": "Finish the task with the final answer.",
            "parameters": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        },
    },
]


@dataclass
class Job:
    url: str
    workspace: Path
    steps: int
    runs: int
    warmup: int
    tmp: Path


def _result(walls: list[float], steps: list[int], answers: list[Any], **info: Any) -> dict:
    return {"walls_s": walls, "steps": steps, "answers": answers, **info}


# --------------------------------------------------------------------------- ours


async def run_ours(job: Job) -> dict[str, Any]:
    from local_ai_router.agent.runner import RunRequest
    from local_ai_router.config import Settings
    from local_ai_router.runtime import Runtime

    settings = Settings.model_validate(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{job.tmp}/ours.db"},
            "backends": [{"name": "upstream", "url": job.url, "kind": "openai", "models": [MODEL]}],
            "agent": {"workspace": str(job.workspace), "max_steps": job.steps + 10},
        }
    )
    rt = Runtime.create(settings)
    await rt.start()
    walls, steps, answers, info = [], [], [], {}
    try:
        for i in range(job.warmup + job.runs):
            t0 = time.perf_counter()
            active = await rt.agent.start_run(
                RunRequest(task=TASK, workspace=job.workspace, model=MODEL)
            )
            last = None
            async for ev in active.stream():
                last = ev
            wall = time.perf_counter() - t0
            assert last is not None and last.type == "run_finished", last
            if last.data.get("status") != "completed":
                raise RuntimeError(f"ours: run ended {last.data}")
            info = {
                "gate": type(active.loop.gate).__name__,
                "recorder": type(active.loop.recorder).__name__,
                "tools_offered": len(active.loop.tools.names()),
            }
            if i >= job.warmup:
                walls.append(wall)
                steps.append(int(last.data["steps"]))
                answers.append(last.data.get("final_answer"))
    finally:
        await rt.stop()
    return _result(walls, steps, answers, **info)


# --------------------------------------------------------------------------- raw httpx2


async def _raw_once(client: Any, job: Job) -> tuple[int, str | None]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": TASK},
    ]
    for step in range(1, job.steps + 11):
        body = {"model": MODEL, "messages": messages, "tools": RAW_TOOLS}
        r = await client.post("/chat/completions", json=body)
        r.raise_for_status()
        msg = r.json()["choices"][0]["message"]
        call = msg["tool_calls"][0]
        args = json.loads(call["function"]["arguments"])
        messages.append(
            {"role": "assistant", "content": msg.get("content") or "", "tool_calls": [call]}
        )
        if call["function"]["name"] == "task_complete":
            return step, args["answer"]
        text = await asyncio.to_thread((job.workspace / args["path"]).read_text)
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})
    return job.steps + 10, None


async def run_raw(job: Job) -> dict[str, Any]:
    import httpx2

    walls, steps, answers = [], [], []
    async with httpx2.AsyncClient(base_url=job.url, timeout=60) as client:
        for i in range(job.warmup + job.runs):
            t0 = time.perf_counter()
            n, answer = await _raw_once(client, job)
            if i >= job.warmup:
                walls.append(time.perf_counter() - t0)
                steps.append(n)
                answers.append(answer)
    return _result(walls, steps, answers, tools_offered=len(RAW_TOOLS))


# --------------------------------------------------------------------------- the SDK


async def run_sdk(job: Job) -> dict[str, Any]:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        StopAtTools,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    workspace = job.workspace

    @function_tool
    async def read_file(path: str) -> str:
        """Read a text file in the workspace."""
        return await asyncio.to_thread((workspace / path).read_text)

    @function_tool
    async def task_complete(answer: str) -> str:
        """Finish the task with the final answer."""
        return answer

    client = AsyncOpenAI(base_url=job.url, api_key="sk-bench")
    agent = Agent(
        name="bench",
        instructions=SYSTEM,
        tools=[read_file, task_complete],
        model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        tool_use_behavior=StopAtTools(stop_at_tool_names=["task_complete"]),
    )
    walls, steps, answers = [], [], []
    for i in range(job.warmup + job.runs):
        t0 = time.perf_counter()
        result = await Runner.run(agent, TASK, max_turns=60)
        if i >= job.warmup:
            walls.append(time.perf_counter() - t0)
            steps.append(len(result.raw_responses))
            answers.append(result.final_output)
    await client.close()
    return _result(walls, steps, answers, tools_offered=2)


WORKERS = {"ours": run_ours, "sdk": run_sdk, "raw": run_raw}


# --------------------------------------------------------------------------- orchestration


def run_worker(python: Path, name: str, job: Job) -> dict[str, Any]:
    """One runner in its own process; returns its JSON result."""
    spec = {k: str(v) if isinstance(v, Path) else v for k, v in vars(job).items()}
    argv = [str(python), str(Path(__file__).resolve()), "--worker", name, json.dumps(spec)]
    env = {**os.environ, "LAR_HOME": str(job.tmp), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
    env = {k: v for k, v in env.items() if k == "LAR_HOME" or not k.startswith("LAR_")}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, env=env, cwd=job.tmp
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} worker failed:\n{done.stderr[-3000:]}")
    out = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    bad = [
        (n, a)
        for n, a in zip(out["steps"], out["answers"], strict=True)
        if n != job.steps or a != ANSWER
    ]
    if bad:
        raise RuntimeError(f"{name}: runs did not follow the script (steps, answer): {bad}")
    return out


def report(results: dict[str, dict[str, Any]], steps: int, runs: int) -> tuple[str, bool]:
    per_step = {name: sorted(1000 * w / steps for w in r["walls_s"]) for name, r in results.items()}
    med = {name: c.median(v) for name, v in per_step.items()}
    labels = {
        "ours": "ours (Runtime, SQLite, gate)",
        "sdk": f"OpenAI Agents SDK ({SDK_SPEC})",
        "raw": "raw httpx2 loop",
    }
    rows = []
    for name, v in per_step.items():
        rel = f"{med[name] / med['ours']:.1f}x" if med.get("ours") else ""
        rows.append(
            [
                labels[name],
                f"{med[name]:.2f}",
                f"{v[0]:.2f} - {v[-1]:.2f}",
                rel,
                str(results[name].get("tools_offered", "")),
            ]
        )
    table = c.markdown_table(
        ["runner", "ms per step (median)", "range over runs", "vs. ours", "tools offered"],
        rows,
    )
    goals = [
        (
            "ours, ms per step",
            f"{med['ours']:.2f} ms",
            f"<= {TARGET_MS:g} ms",
            med["ours"] <= TARGET_MS,
        )
    ]
    if "sdk" in med:
        ratio = med["sdk"] / med["ours"]
        goals.append(
            ("SDK / ours", f"{ratio:.1f}x", f">= {TARGET_RATIO:g}x", ratio >= TARGET_RATIO)
        )
    info = results["ours"]
    lines = [
        table,
        "",
        c.markdown_table(
            ["target", "measured", "goal", "met"],
            [[g, m, t, "yes" if ok else "NO"] for g, m, t, ok in goals],
        ),
        "",
        f"Machine: {c.machine_facts()}.",
        f"{steps} steps per run ({steps - 1} read_file + task_complete), {runs} measured runs "
        f"per runner after a warm-up run. Ours: gate {info.get('gate')}, recorder "
        f"{info.get('recorder')}, native tool calls.",
    ]
    return "\n".join(lines), all(ok for *_, ok in goals)


def run(args: argparse.Namespace) -> int:
    runners: dict[str, Path] = {"ours": c.MAIN_PYTHON}
    if args.sdk:
        sdk = c.venv_python("openai-agents", [SDK_SPEC], install=not args.quick)
        if sdk is None:
            print(
                "[skip] the Agents SDK is not installed; a run without --quick installs it",
                file=sys.stderr,
            )
        else:
            runners["sdk"] = sdk
    runners["raw"] = c.MAIN_PYTHON
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lar-bench-agent-") as tmpdir:
        tmp = Path(tmpdir)
        ws = tmp / "workspace"
        ws.mkdir()
        (ws / c.AGENT_FILE).write_text(c.AGENT_FILE_TEXT)
        with c.start_upstream("agent", steps=args.steps, log=tmp / "upstream.log") as up:
            for rnd in range(args.rounds):
                for name, python in runners.items():
                    print(
                        f"[run] round {rnd + 1}/{args.rounds} {name}", file=sys.stderr, flush=True
                    )
                    job = Job(up.url, ws, args.steps, args.runs, 1, tmp)
                    out = run_worker(python, name, job)
                    prev = results.setdefault(name, {**out, "walls_s": []})
                    prev["walls_s"] += out["walls_s"]
    text, ok = report(results, args.steps, args.runs * args.rounds)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok or not args.strict else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Agent loop ms per step vs. the Agents SDK and raw.")
    p.add_argument("--quick", action="store_true", help="smoke run (< 30 s), no installs")
    p.add_argument(
        "--sdk",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the OpenAI Agents SDK (default: yes)",
    )
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--runs", type=int, help="measured runs per runner and round (default 5)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 2)")
    p.add_argument("--json", type=Path, help="also write raw results here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--worker", nargs=2, metavar=("NAME", "JOB"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        name, spec = args.worker
        raw = json.loads(spec)
        job = Job(
            raw["url"],
            Path(raw["workspace"]),
            raw["steps"],
            raw["runs"],
            raw["warmup"],
            Path(raw["tmp"]),
        )
        print(json.dumps(asyncio.run(WORKERS[name](job))))
        return 0
    args.runs = args.runs or (1 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if min(args.steps, args.runs, args.rounds) < 1:
        p.error("--steps, --runs and --rounds must be >= 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
