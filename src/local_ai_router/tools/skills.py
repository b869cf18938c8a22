"""Skill tools: ``list_skills``, ``search_skills``, ``read_skill``.

The index comes from ``ctx.services["skills"]`` (a :class:`SkillIndex`) so
the tools stay stateless. Outputs are short: weak models with small windows
read them, and the descriptions are kept to a phrase because every tool's
description is paid for in each prompt.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import PurePosixPath

from ..skills import Skill, SkillIndex
from ..types import ToolError
from .registry import Tool, ToolContext, tool

__all__ = ["list_skills", "read_skill", "render_skill", "search_skills", "skill_tools"]

NOT_CONFIGURED = "No skills are configured (no skill folders were found)."
MAX_LISTED = 60
MAX_RESOURCES_SHOWN = 30
_INTERPRETERS = {
    ".py": "python",
    ".sh": "bash",
    ".bash": "bash",
    ".js": "node",
    ".mjs": "node",
    ".cjs": "node",
    ".rb": "ruby",
    ".pl": "perl",
}


def _index(ctx: ToolContext) -> SkillIndex | None:
    found = ctx.services.get("skills")
    return found if isinstance(found, SkillIndex) else None


def _line(skill: Skill) -> str:
    cat = f" [{skill.category}]" if skill.category else ""
    return f"- {skill.name}{cat}: {skill.one_line(120)}"


@tool(description="List skills", read_only=True, kind="read")
async def list_skills(ctx: ToolContext, category: str | None = None) -> str:
    """List skills, optionally by category."""
    index = _index(ctx)
    if index is None or len(index) == 0:
        return NOT_CONFIGURED
    skills = index.list(category)
    if not skills:
        cats = ", ".join(index.categories()) or "none"
        return f"No skills in category {category!r}. Categories: {cats}."
    lines = [_line(s) for s in skills[:MAX_LISTED]]
    if len(skills) > MAX_LISTED:
        lines.append(f"(+{len(skills) - MAX_LISTED} more: use search_skills)")
    lines.append("Use read_skill(name) for instructions.")
    return "\n".join(lines)


@tool(description="Search skills", read_only=True, kind="read")
async def search_skills(ctx: ToolContext, query: str) -> str:
    """Find skills by keywords."""
    if not query.strip():
        raise ToolError("query is empty; give a few keywords, e.g. search_skills(query='pdf')")
    index = _index(ctx)
    if index is None or len(index) == 0:
        return NOT_CONFIGURED
    hits = index.search(query, limit=5)
    if not hits:
        return f"No skills match {query!r}. Try other words or list_skills."
    lines = [_line(s) for s, _ in hits]
    lines.append("Use read_skill(name) for instructions.")
    return "\n".join(lines)


@tool(description="Read a skill", read_only=True, kind="read")
async def read_skill(ctx: ToolContext, name: str) -> str:
    """Read a skill's instructions and files."""
    index = _index(ctx)
    if index is None or len(index) == 0:
        raise ToolError(NOT_CONFIGURED)
    skill = index.get(name)
    if skill is None:
        raise ToolError(_unknown(index, name))
    try:
        body = await asyncio.to_thread(skill.load_body)
    except OSError as exc:
        raise ToolError(f"cannot read skill {skill.name!r} at {skill.path}: {exc}") from None
    return render_skill(skill, body)


def _unknown(index: SkillIndex, name: str) -> str:
    guesses = index.suggest(name)
    msg = f"unknown skill {name!r}"
    if guesses:
        msg += f"; did you mean: {', '.join(guesses)}?"
    return f"{msg} Use search_skills(query) to find skills."


def render_skill(skill: Skill, body: str) -> str:
    """A skill as the model reads it: header, body, then its files and how to run scripts."""
    head = [f"Skill: {skill.name}", f"Folder: {skill.folder}"]
    if skill.when_to_use:
        head.append(f"When to use: {skill.when_to_use}")
    if skill.allowed_tools:
        head.append(f"Allowed tools: {', '.join(skill.allowed_tools)}")
    parts = ["\n".join(head), body.strip() or "(empty body)"]
    scripts = [r for r in skill.resources if _is_script(r)]
    others = [r for r in skill.resources if not _is_script(r)]
    if scripts:
        shown = [f"{r} (run with run_shell: {_run_line(skill, r)})" for r in scripts]
        parts.append("Scripts: " + "; ".join(_capped(shown)))
    if others:
        parts.append("Files: " + ", ".join(_capped(others)))
    return "\n\n".join(parts)


def _capped(items: list[str]) -> list[str]:
    if len(items) <= MAX_RESOURCES_SHOWN:
        return items
    return [*items[:MAX_RESOURCES_SHOWN], f"(+{len(items) - MAX_RESOURCES_SHOWN} more)"]


def _is_script(rel: str) -> bool:
    p = PurePosixPath(rel)
    return p.suffix.lower() in _INTERPRETERS or (len(p.parts) > 1 and p.parts[0] == "scripts")


def _run_line(skill: Skill, rel: str) -> str:
    path = shlex.quote(str(skill.folder / rel))
    interp = _INTERPRETERS.get(PurePosixPath(rel).suffix.lower())
    return f"{interp} {path}" if interp else path


def skill_tools() -> list[Tool]:
    """The three skill tools, to register in a :class:`ToolRegistry`."""
    return [list_skills, search_skills, read_skill]
