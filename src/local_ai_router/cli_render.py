"""How ``lar run`` shows a run: text (a readable log of steps), json, or stream-json."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

__all__ = ["EventRenderer"]

RESULT_KEYS = ("run_id", "session_id", "status", "final_answer", "steps", "usage")


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EventRenderer:
    def __init__(self, output: str, *, console: Console | None = None):
        self.output = output
        # stream-json and json own stdout; everything human goes to stderr then.
        self.console = console or Console(stderr=output != "text", highlight=False)

    def render(self, ev: dict[str, Any]) -> None:
        if self.output == "stream-json":
            sys.stdout.write(json.dumps(ev, ensure_ascii=False, default=str) + "\n")
            sys.stdout.flush()
            return
        if self.output == "text":
            self._text(ev)

    def _text(self, ev: dict[str, Any]) -> None:
        c, t = self.console, ev["type"]
        indent = "    " if ev.get("parent_run_id") else ""
        if t == "run_started":
            c.print(
                f"{indent}[bold]▶ {escape(_short(ev['task'], 100))}[/] [dim]({ev.get('model')})[/]"
            )
        elif t == "action":
            args = ", ".join(f"{k}={_short(v, 60)}" for k, v in (ev.get("args") or {}).items())
            c.print(f"{indent}[cyan]●[/] {escape(ev['tool'])}({escape(args)})")
        elif t == "tool_result":
            if ev["ok"]:
                lines = (ev.get("output") or "").strip().splitlines()
                preview = _short(lines[0], 100) + (
                    f" [+{len(lines) - 1} lines]" if len(lines) > 1 else ""
                )
                c.print(f"{indent}  [green]✓[/] [dim]{escape(preview)}[/]")
            else:
                c.print(f"{indent}  [red]✗ {escape(_short(ev.get('error') or '', 160))}[/]")
        elif t == "message":
            c.print(f"{indent}[yellow]💬[/] {escape(_short(ev['text'], 300))}")
        elif t == "permission_decision" and ev["decision"] == "deny":
            c.print(f"{indent}  [red]⛔ denied by {ev['by']}: {escape(ev.get('reason') or '')}[/]")
        elif t == "error":
            c.print(f"{indent}  [red]! {ev.get('kind')}: {escape(_short(ev['message'], 200))}[/]")
        elif t == "compaction":
            c.print(
                f"{indent}  [dim]⇣ compacted {ev['before_tokens']} → {ev['after_tokens']} tokens[/]"
            )
        elif t == "subagent_started":
            prompt = escape(_short(ev["prompt"], 80))
            c.print(f"{indent}[magenta]⇉ subagent {ev['child_run_id']}[/]: {prompt}")
        elif t == "subagent_finished":
            c.print(f"{indent}[magenta]⇇ subagent {ev['child_run_id']} {ev['status']}[/]")

    def ask(self, tool: str, args: dict[str, Any], reason: str) -> str:
        """Prompt on the terminal; returns yes / no / always."""
        self.console.print(
            f"[bold yellow]? allow {escape(tool)}({escape(_short(args, 200))})[/]"
            f" [dim]{escape(reason)}[/]"
        )
        while True:
            try:
                answer = input("  [y]es / [n]o / [a]lways for this session: ").strip().lower()
            except EOFError:
                return "no"
            if answer in ("y", "yes"):
                return "yes"
            if answer in ("n", "no", ""):
                return "no"
            if answer in ("a", "always"):
                return "always"

    def finish(self, final: dict[str, Any]) -> None:
        if self.output == "json":
            sys.stdout.write(
                json.dumps({k: final.get(k) for k in RESULT_KEYS}, ensure_ascii=False) + "\n"
            )
        elif self.output == "text" and final:
            color = "green" if final.get("status") == "completed" else "red"
            self.console.print(
                f"[{color}]■ {final.get('status')}[/] after {final.get('steps')} steps "
                f"[dim](session {final.get('session_id')})[/]"
            )
            if final.get("final_answer"):
                self.console.print(escape(str(final["final_answer"])))
            elif final.get("error"):
                self.console.print(f"[red]{escape(str(final['error']))}[/]")
