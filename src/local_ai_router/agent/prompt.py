"""The system prompt, the text tool protocol, and the constrained-output schema.

Small local models have small windows: the first request of a run (system
prompt plus every tool schema) must stay under ~1,200 tokens. Everything here is
written to be short; skills and agent types are named in one line each within
a character budget, their bodies load on demand.
"""

from __future__ import annotations

import json
from typing import Any

from ..tools.registry import ToolRegistry
from ..types import Message

__all__ = [
    "TEXT_PROTOCOL",
    "action_schema",
    "build_system_prompt",
    "render_for_text_mode",
    "tool_result_message",
]

BASE = (
    "You are a coding agent in {workspace}. Call exactly one tool per turn; "
    "its result comes next turn. When done, call task_complete with the answer."
)

TEXT_PROTOCOL = (
    "Tools (args? is optional):\n{tools}\n"
    'Reply with exactly one JSON object and nothing else: {{"tool": "<name>", "args": {{...}}}}'
)

NUDGE = (
    "You replied without calling a tool. Call one tool now, or call task_complete "
    "with your final answer if the task is done."
)


def build_system_prompt(
    workspace: str,
    tools: ToolRegistry,
    *,
    mode: str,
    skills_listing: str = "",
    agents_listing: str = "",
    extra: str = "",
) -> str:
    parts = [BASE.format(workspace=workspace)]
    if extra:
        parts.append(extra.strip())
    if skills_listing:
        parts.append("Skills (read_skill NAME):\n" + skills_listing)
    if agents_listing and "spawn_agents" in tools:
        parts.append("spawn_agents types:\n" + agents_listing)
    if mode in ("text", "constrained"):
        parts.append(TEXT_PROTOCOL.format(tools=tools.compact_text()))
    return "\n\n".join(parts)


def action_schema(tools: ToolRegistry) -> dict[str, Any]:
    """A JSON schema every valid action matches: one branch per tool, with its own args."""
    branches = []
    for t in tools:
        args = dict(t.parameters) if t.parameters else {"type": "object"}
        args.setdefault("type", "object")
        branches.append(
            {
                "type": "object",
                "properties": {"tool": {"const": t.name}, "args": args},
                "required": ["tool", "args"],
            }
        )
    return (
        {"oneOf": branches}
        if len(branches) > 1
        else (branches[0] if branches else {"type": "object"})
    )


def tool_result_message(call_id: str, name: str, content: str) -> Message:
    return {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}


def render_for_text_mode(messages: list[Message]) -> list[Message]:
    """Stored (native-shaped) history as a text-protocol server expects it.

    Servers without tool support reject ``role: tool`` and ``tool_calls``: the
    assistant's call becomes the JSON it would have written, its result a user turn.
    """
    out: list[Message] = []
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            call = m["tool_calls"][0].get("function", {})
            try:
                args = json.loads(call.get("arguments") or "{}")
            except (ValueError, TypeError):
                args = call.get("arguments")
            text = json.dumps({"tool": call.get("name"), "args": args}, ensure_ascii=False)
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            out.append(
                {
                    "role": "user",
                    "content": f"[{m.get('name') or 'tool'} result]\n{m.get('content', '')}",
                }
            )
        else:
            out.append(m)
    return out
