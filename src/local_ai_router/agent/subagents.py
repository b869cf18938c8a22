"""Subagents: children with fresh, isolated contexts, run in parallel.

A parent hands several independent tasks to children in one ``spawn_agents``
action. Each child is a full agent run (own session, own tools, the same
permission gate and hooks) that sees only its definition's system prompt and
its task, never the parent's conversation. Their answers come back together as
one tool result; their events stream inside the parent's, tagged with
``parent_run_id``.

Definitions are Claude Code's subagent files (``.claude/agents/NAME.md``) or
``agents/definitions/NAME.md`` in the workspace, or ``agent.subagents.definitions``
in the config: frontmatter ``name``, ``description``, ``tools``, ``model``,
``max_steps`` / ``maxTurns``, ``permissionMode``; the body is the system prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..tools.registry import truncate

if TYPE_CHECKING:
    from .runner import ActiveRun, AgentService

__all__ = [
    "READ_ONLY_TOOLS",
    "AgentDefinition",
    "Spawner",
    "builtin_definitions",
    "load_definitions",
]

log = logging.getLogger(__name__)

DEFINITION_DIRS = (".claude/agents", "agents/definitions")
READ_ONLY_TOOLS = (
    "read_file",
    "list_directory",
    "search_files",
    "git_status",
    "git_diff",
    "git_log",
    "list_skills",
    "search_skills",
    "read_skill",
)
# Claude Code's names in a definition's ``tools`` line map to ours.
_TOOL_ALIASES = {
    "Bash": "run_shell",
    "Read": "read_file",
    "Write": "write_file",
    "Edit": "edit_file",
    "MultiEdit": "edit_file",
    "Glob": "search_files",
    "Grep": "search_files",
    "LS": "list_directory",
    "Task": "spawn_agents",
    "Agent": "spawn_agents",
}
ANSWER_LIMIT = 4000


@dataclass(frozen=True)
class AgentDefinition:
    name: str
    description: str
    prompt: str = ""
    tools: tuple[str, ...] | None = None  # None: every tool
    model: str | None = None  # None / "inherit": the parent's model
    max_steps: int | None = None
    permission_mode: str | None = None
    source: str = "built-in"


def builtin_definitions() -> dict[str, AgentDefinition]:
    return {
        "general": AgentDefinition("general", "any self-contained task"),
        "explore": AgentDefinition(
            "explore",
            "read-only code search",
            prompt="You only read and search; never modify files. Report findings concisely.",
            tools=READ_ONLY_TOOLS,
        ),
    }


def _tools_field(value: Any) -> tuple[str, ...] | None:
    if value is None or value == "" or value == "*":
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    names = []
    for raw in items:
        name = str(raw).strip()
        name = _TOOL_ALIASES.get(name.split("(")[0], name)
        if name and name not in names:
            names.append(name)
    return tuple(names)


def _definition(name: str, meta: Mapping[str, Any], body: str, source: str) -> AgentDefinition:
    steps = meta.get("max_steps", meta.get("maxTurns"))
    model = meta.get("model")
    return AgentDefinition(
        name=str(meta.get("name") or name),
        description=str(meta.get("description") or "").strip() or f"{name} agent",
        prompt=(body or str(meta.get("prompt") or "")).strip(),
        tools=_tools_field(meta.get("tools")),
        model=None if model in (None, "", "inherit") else str(model),
        max_steps=int(steps) if isinstance(steps, int | str) and str(steps).isdigit() else None,
        permission_mode=meta.get("permissionMode") or meta.get("permission_mode"),
        source=source,
    )


def parse_definition_file(path: Path) -> AgentDefinition:
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    meta: Any = {}
    body = text
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end == -1:
            raise ValueError("frontmatter is not closed with ---")
        meta = yaml.safe_load(text[4:end]) or {}
        body = text[end + 4 :].lstrip("\n")
        if not isinstance(meta, dict):
            raise ValueError("frontmatter must be a mapping")
    return _definition(path.stem, meta, body, str(path))


def load_definitions(
    workspace: Path,
    configured: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    dirs: Iterable[str] = DEFINITION_DIRS,
) -> tuple[dict[str, AgentDefinition], list[str]]:
    """Built-ins, then config, then workspace files (later sources override earlier ones)."""
    defs = builtin_definitions()
    problems: list[str] = []
    for name, meta in (configured or {}).items():
        defs[name] = _definition(name, meta, str(meta.get("prompt") or ""), "config")
    for rel in dirs:
        folder = workspace / rel
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.md")):
            try:
                d = parse_definition_file(path)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                problems.append(f"{path}: {exc}")
                continue
            defs[d.name] = d
    return defs, problems


def listing(defs: Mapping[str, AgentDefinition], budget_chars: int = 400) -> str:
    """One line per agent type for the parent's system prompt, within a budget."""
    lines, used = [], 0
    for d in defs.values():
        line = f"- {d.name}: {d.description[:90]}"
        if used + len(line) > budget_chars:
            lines.append(f"(+{len(defs) - len(lines)} more)")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


async def _until(event: asyncio.Event) -> None:
    """Wait for ``event`` even if this task is cancelled again meanwhile (cleanup must finish)."""
    while not event.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(event.wait())


@dataclass
class ChildOutcome:
    index: int
    agent: str
    run_id: str | None = None
    status: str = "failed"
    answer: str | None = None
    error: str | None = None


@dataclass
class Spawner:
    """Runs one parent's children; lives in the parent's ToolContext (``services["spawner"]``)."""

    service: AgentService
    parent: ActiveRun
    definitions: dict[str, AgentDefinition]
    max_concurrent: int = 4
    timeout_s: float = 600.0
    _sem: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._sem = asyncio.Semaphore(self.max_concurrent)

    async def spawn(self, tasks: list[dict[str, Any]]) -> str:
        children = [asyncio.ensure_future(self._child(i, t)) for i, t in enumerate(tasks, 1)]
        try:
            outcomes = await asyncio.gather(*children)
        except BaseException:
            # gather() returns at the first cancelled child; wait for every child to wind down
            # so that none outlives the parent's run.
            for c in children:
                if not c.done() and not c.cancelling():
                    c.cancel()
            await asyncio.gather(*children, return_exceptions=True)
            raise
        return "\n\n".join(self._render(o) for o in outcomes)

    def _render(self, o: ChildOutcome) -> str:
        head = f"[{o.index}] agent={o.agent} status={o.status}" + (
            f" run={o.run_id}" if o.run_id else ""
        )
        if o.answer:
            return f"{head}\n{truncate(o.answer, ANSWER_LIMIT)}"
        return f"{head}\nerror: {o.error or 'no answer'}"

    async def _child(self, index: int, task: dict[str, Any]) -> ChildOutcome:
        name = task.get("agent") or "general"
        outcome = ChildOutcome(index, name)
        definition = self.definitions.get(name)
        if definition is None:
            outcome.error = f"unknown agent type {name!r}; known: {', '.join(self.definitions)}"
            return outcome
        async with self._sem:
            return await self._run_child(outcome, definition, str(task.get("prompt") or ""))

    async def _run_child(
        self, outcome: ChildOutcome, d: AgentDefinition, prompt: str
    ) -> ChildOutcome:
        parent = self.parent
        try:
            child = await self.service.start_child(parent, d, prompt)
        except Exception as exc:
            outcome.error = f"could not start: {exc}"
            return outcome
        outcome.run_id = child.run_id
        parent.loop.emit("subagent_started", child_run_id=child.run_id, prompt=prompt, agent=d.name)
        try:
            await asyncio.wait_for(asyncio.shield(child.done.wait()), self.timeout_s)
        except TimeoutError:
            child.loop.cancel()
            await child.done.wait()
            outcome.status, outcome.error = "timeout", f"no answer within {self.timeout_s:g}s"
        except asyncio.CancelledError:  # the parent was cancelled: so are its children
            child.loop.cancel()
            await _until(child.done)
            raise
        else:
            result = child.loop.result
            outcome.status, outcome.answer, outcome.error = (
                result.status,
                result.final_answer,
                result.error,
            )
        parent.loop.emit(
            "subagent_finished",
            child_run_id=child.run_id,
            status=outcome.status,
            final_answer=outcome.answer,
        )
        return outcome
