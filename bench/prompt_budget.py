"""Prompt economy: what the first request of an agent run costs, in tokens (characters / 4).

The request is captured, not rebuilt: a one-step run goes through the real runtime
(``Runtime`` -> ``AgentService.start_run`` -> gateway -> HTTP) against a ``ScriptedBackend``,
and the body the server received (``backend.requests[0]``) is measured: the system prompt plus
every tool schema as JSON (native mode), or the system prompt alone, which then describes the
tools compactly (text mode). Tool JSON is counted as chat templates render it
(``json.dumps`` with its default ``", "`` / ``": "`` separators, like Jinja's ``tojson``);
the compact wire form is shown for reference. Also printed: each tool's own cost, sorted,
so the schemas can be trimmed where it pays.

Exits 1 when a mode's first request (system prompt + tools) is over the budget.

    .venv/bin/python bench/prompt_budget.py          # (--quick is accepted and the same: ~2 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c

BUDGET_TOKENS = 1200
MODEL = "bench-model"
TASK = "List the files in the workspace."
ORIGINAL = "the original system: 24 tool schemas alone ~2,775 tokens"


def tokens(chars: int) -> int:
    return -(-chars // 4)


@dataclass
class Capture:
    mode: str
    body: dict[str, Any]
    tools: list[Any]  # the registry's Tool objects, in the order offered

    @property
    def system(self) -> str:
        first = self.body["messages"][0]
        return first["content"] if first.get("role") == "system" else ""

    @property
    def tools_json(self) -> str:
        return json.dumps(self.body["tools"]) if self.body.get("tools") else ""

    @property
    def tools_compact(self) -> str:
        tools = self.body.get("tools")
        return json.dumps(tools, separators=(",", ":"), ensure_ascii=False) if tools else ""

    @property
    def total_chars(self) -> int:
        return len(self.system) + len(self.tools_json)


def _reply(mode: str) -> Any:
    from local_ai_router.testing import Reply, tool_call

    if mode == "native":
        return Reply(tool_calls=[tool_call("task_complete", {"answer": "ok"})])
    return Reply(content=json.dumps({"tool": "task_complete", "args": {"answer": "ok"}}))


def _write_skills(workspace: Path, n: int) -> None:
    """Enough skills to fill the system prompt's skills listing to its cap."""
    for i in range(n):
        folder = workspace / ".claude" / "skills" / f"skill-{i:02d}"
        folder.mkdir(parents=True)
        (folder / "SKILL.md").write_text(
            f"---\nname: skill-{i:02d}\ndescription: Does task number {i} the way this team "
            "likes it done, with the checks it needs.\n---\nSteps.\n"
        )


async def capture(mode: str, tmp: Path, *, skills: int = 0) -> Capture:
    """Run one step through the real runtime; return the first request the model server got."""
    from local_ai_router.agent.runner import RunRequest
    from local_ai_router.config import Settings
    from local_ai_router.runtime import Runtime
    from local_ai_router.testing import ScriptedBackend

    ws = Path(tempfile.mkdtemp(prefix=f"ws-{mode}-", dir=tmp))
    (ws / ".git").mkdir()  # a git work tree: the git tools are offered, as in a real project
    _write_skills(ws, skills)
    async with ScriptedBackend([_reply(mode)], models=[MODEL], kind="openai") as backend:
        settings = Settings.model_validate(
            {
                "storage": {"url": f"sqlite+aiosqlite:///{ws}.db"},
                "backends": [
                    {"name": "b", "url": backend.url, "kind": "openai", "models": [MODEL]}
                ],
                "agent": {"workspace": str(ws)},
                "health": {"interval_s": 3600},
            }
        )
        rt = Runtime.create(settings)
        await rt.start()
        try:
            req = RunRequest(task=TASK, workspace=ws, model=MODEL, tool_mode=mode)
            active = await rt.agent.start_run(req)
            events = [ev async for ev in active.stream()]
            tools = list(active.loop.tools)
        finally:
            await rt.stop()
    end = events[-1]
    if end.type != "run_finished" or end.data.get("status") != "completed":
        raise RuntimeError(f"the {mode} run did not complete: {end.type} {end.data}")
    if not backend.requests:
        raise RuntimeError(f"the {mode} run sent no request")
    return Capture(mode, backend.requests[0], tools)


def summary_table(caps: list[tuple[str, Capture]]) -> str:
    rows = []
    for label, cap in caps:
        sys_c, tools_c = len(cap.system), len(cap.tools_json)
        wire = f"{len(cap.tools_compact):,}" if cap.tools_compact else "-"
        rows.append(
            [
                label,
                str(len(cap.tools)),
                f"{sys_c:,} / {tokens(sys_c):,}",
                f"{tools_c:,} / {tokens(tools_c):,}" if tools_c else "in the prompt",
                wire,
                f"{cap.total_chars:,} / **{tokens(cap.total_chars):,}**",
                "yes" if tokens(cap.total_chars) <= BUDGET_TOKENS else "NO",
            ]
        )
    return c.markdown_table(
        [
            "first request",
            "tools",
            "system prompt (chars / tokens)",
            "tool schemas (chars / tokens)",
            "schemas, compact JSON (chars)",
            "total (chars / tokens)",
            f"<= {BUDGET_TOKENS:,}",
        ],
        rows,
    )


def per_tool_table(native: Capture) -> str:
    text_lines = {t.name: t.compact() for t in native.tools}
    rows = []
    for schema in native.body.get("tools") or []:
        name = schema["function"]["name"]
        n = len(json.dumps(schema))
        line = len(text_lines.get(name, "")) + 1  # + the newline
        rows.append((n, [name, f"{n:,}", f"{tokens(n):,}", f"{line:,}", f"{tokens(line):,}"]))
    rows.sort(key=lambda r: -r[0])
    total = sum(n for n, _ in rows)
    body = [r for _, r in rows]
    body.append(["**all**", f"{total:,}", f"{tokens(total):,}", "", ""])
    return c.markdown_table(
        ["tool", "native JSON (chars)", "tokens", "text mode line (chars)", "tokens"], body
    )


async def measure(tmp: Path) -> tuple[list[tuple[str, Capture]], Capture]:
    native = await capture("native", tmp)
    text = await capture("text", tmp)
    full = await capture("native", tmp, skills=30)
    caps = [
        ("native (tools as JSON schemas)", native),
        ("text (tools described in the prompt)", text),
        ("native, 30 skills installed (listing capped)", full),
    ]
    return caps, native


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Tokens of the first request of an agent run.")
    p.add_argument("--quick", action="store_true", help="accepted for symmetry; same run")
    p.add_argument("--show", choices=["native", "text"], help="also print that system prompt")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lar-bench-prompt-") as tmpdir:
        caps, native = asyncio.run(measure(Path(tmpdir)))
    print(summary_table(caps))
    print()
    print(per_tool_table(native))
    print()
    print(
        f"Tokens = ceil(chars / 4). Budget {BUDGET_TOKENS:,} tokens for the system prompt plus "
        f"tool schemas of a run's first request (task text not counted: {len(TASK)} chars here); "
        f"for comparison, {ORIGINAL}. Python {sys.version.split()[0]}."
    )
    if args.show:
        cap = {"native": caps[0][1], "text": caps[1][1]}[args.show]
        print(f"\n--- {args.show} system prompt ---\n{cap.system}")
    over = [label for label, cap in caps[:2] if tokens(cap.total_chars) > BUDGET_TOKENS]
    if over:
        print(f"OVER BUDGET: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
