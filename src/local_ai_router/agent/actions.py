"""One assistant reply -> exactly one action, a plain message, or an invalid action.

Weak local models call tools in many dialects: native ``tool_calls`` (sometimes with
broken arguments), or text in the family's own markup (Hermes/Qwen ``<tool_call>``,
Qwen3-Coder XML, Llama ``<|python_tag|>``, Mistral ``[TOOL_CALLS]``, Functionary,
Granite, DeepSeek/Kimi markers) or bare/fenced JSON. This module reads them all: the
text formats are read in :mod:`.text_calls`, JSON shapes in :mod:`.call_json`; the
native calls, the rules and the judging live here.

Rules: native calls win over text; the first call is the only one run; nothing inside
``<think>`` is ever executed; broken JSON is repaired with ``json_repair`` where the
meaning is clear (but never when the text ends inside a string: that is a truncated
value, and running it would e.g. write half a file). JSON outside an explicit
tool-call wrapper counts only when it names a known tool; inside a wrapper an unknown
name or unreadable JSON becomes an :class:`InvalidAction` the model can learn from.
The parser never raises: model output is untrusted input.
"""

from __future__ import annotations

import difflib
import logging
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from ..types import Action, InvalidAction, ParsedReply, ToolCall
from .call_json import ARG_KEYS, Found, args_problem, coerce_args
from .text_calls import Judge, from_text

__all__ = ["parse_arguments", "parse_reply", "strip_thinking"]

_log = logging.getLogger(__name__)

FORMAT_HINT = '{"name": "<tool>", "arguments": {...}}'

_END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>")
_END_TOKENS += ("<|call|>", "<｜end▁of▁sentence｜>", "</s>")
_MAX_LISTED = 60  # tool names listed in an unknown_tool message

_THINK_TAG = re.compile(r"<(/?)think(?:ing)?>", re.IGNORECASE)


@dataclass(slots=True)
class _Tools:
    names: frozenset[str]
    folded: dict[str, str]  # case/hyphen-folded name -> real name, unambiguous ones only


# --------------------------------------------------------------------------- public


def parse_reply(
    content: str | None,
    tool_calls: list[dict] | list[ToolCall] | None,
    known_tools: Collection[str],
) -> ParsedReply:
    """Turn one assistant reply into at most one action (or an invalid action)."""
    try:
        return _parse(content, tool_calls, known_tools)
    except Exception:  # last line of defence: a parser bug must not kill the run
        _log.exception("action parser failed; treating the reply as a plain message")
        return ParsedReply(text=content if isinstance(content, str) else "")


def strip_thinking(text: str) -> tuple[str, str | None]:
    """Split ``text`` into (visible text, thinking text or None).

    Handles ``<think>...</think>`` blocks anywhere, an unclosed ``<think>`` (the rest
    is thinking) and a reply that starts mid-thought with only ``</think>`` (the
    chat template opened the block in the prompt).
    """
    if not isinstance(text, str) or "think" not in text.lower():
        return (text if isinstance(text, str) else ""), None
    visible: list[str] = []
    thinking: list[str] = []
    pos = 0
    inside = False
    tags = list(_THINK_TAG.finditer(text))
    first_open = next((t for t in tags if not t.group(1)), None)
    first_close = next((t for t in tags if t.group(1)), None)
    if first_close is not None and (first_open is None or first_close.start() < first_open.start()):
        thinking.append(text[: first_close.start()])
        pos = first_close.end()
    for tag in tags:
        if tag.start() < pos:
            continue
        closing = bool(tag.group(1))
        if not inside and not closing:
            visible.append(text[pos : tag.start()])
            inside, pos = True, tag.end()
        elif inside and closing:
            thinking.append(text[pos : tag.start()])
            inside, pos = False, tag.end()
        elif not inside:  # a stray </think> in visible text: drop the tag only
            visible.append(text[pos : tag.start()])
            pos = tag.end()
    (thinking if inside else visible).append(text[pos:])
    thought = "\n".join(t.strip() for t in thinking if t.strip())
    return "".join(visible), thought or None


def parse_arguments(raw: str | dict | None) -> dict | None:
    """Arguments as sent (JSON string, dict, empty) -> dict; None when irreparable."""
    return coerce_args(raw, 0)


# --------------------------------------------------------------------------- driver


def _parse(content: Any, tool_calls: Any, known_tools: Collection[str]) -> ParsedReply:
    visible, thinking = strip_thinking(_content_text(content))
    visible = _strip_end_tokens(visible)
    tools = _tools(known_tools)
    judge = _text_judge(tools)
    calls = _as_list(tool_calls)
    if calls:
        outcome, nameless = _native(calls, tools)
        text, found = from_text(visible, judge)  # text: the prose, markup removed
        if outcome is not None:
            return _reply(text, outcome, thinking)
        return _reply(text, found if found is not None else nameless, thinking)
    text, found = from_text(visible, judge)
    return _reply(text, found, thinking)


def _reply(text: str, outcome: Action | InvalidAction | None, thinking: str | None) -> ParsedReply:
    if isinstance(outcome, Action):
        return ParsedReply(text=text, action=outcome, thinking=thinking)
    if isinstance(outcome, InvalidAction):
        return ParsedReply(text=text, invalid=outcome, thinking=thinking)
    return ParsedReply(text=text, thinking=thinking)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        parts = [p.get("text") if isinstance(p, dict) else p for p in content]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content)


def _strip_end_tokens(text: str) -> str:
    changed = True
    while changed:
        changed = False
        text = text.rstrip()
        for token in _END_TOKENS:
            if text.endswith(token):
                text = text[: -len(token)]
                changed = True
    return text


def _tools(known_tools: Collection[str]) -> _Tools:
    names = frozenset(t for t in known_tools if isinstance(t, str)) if known_tools else frozenset()
    folded: dict[str, str] = {}
    clashes: set[str] = set()
    for name in names:
        key = _fold(name)
        if key in folded:
            clashes.add(key)
        folded[key] = name
    for key in clashes:
        del folded[key]
    return _Tools(names, folded)


def _fold(name: str) -> str:
    return name.lower().replace("-", "_")


def _resolve(name: str, tools: _Tools) -> str | None:
    """The known tool ``name`` means, tolerating case, quotes and a ``functions.`` prefix."""
    name = name.strip().strip("`'\"").strip()
    if name in tools.names:
        return name
    for prefix in ("functions.", "function.", "tools."):
        if name.startswith(prefix) and name[len(prefix) :] in tools.names:
            return name[len(prefix) :]
    return tools.folded.get(_fold(name))


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


def _outcome(
    found: Found, tools: _Tools, *, wrapped: bool, source: Literal["native", "text"]
) -> Action | InvalidAction | None:
    """Judge a found call: an action, an invalid action, or (unwrapped junk) nothing."""
    call_id = found.call_id or _new_id()
    if not found.name:
        if not wrapped:
            return None
        return InvalidAction("bad_json", _bad_json_message(found.problem), None, call_id, source)
    tool = _resolve(found.name, tools)
    if tool is None:
        if not wrapped:
            return None
        message = _unknown_message(found.name, tools)
        return InvalidAction("unknown_tool", message, found.name[:200], call_id, source)
    if found.args is None:
        return InvalidAction(
            "bad_json", _bad_json_message(found.problem, tool), tool, call_id, source
        )
    return Action(tool=tool, args=found.args, call_id=call_id, source=source)


def _text_judge(tools: _Tools) -> Judge:
    """Text calls are judged like native ones, against the same tools."""

    def judge(found: Found, *, wrapped: bool) -> Action | InvalidAction | None:
        return _outcome(found, tools, wrapped=wrapped, source="text")

    return judge


def _unknown_message(name: str, tools: _Tools) -> str:
    names = sorted(tools.names)
    listed = ", ".join(names[:_MAX_LISTED]) or "(none)"
    if len(names) > _MAX_LISTED:
        listed += f", ... ({len(names) - _MAX_LISTED} more)"
    hint = ""
    if len(name) <= 64:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"Unknown tool {name[:80]!r}: there is no tool by that name.{hint} "
        f"Available tools: {listed}. Call exactly one of them as {FORMAT_HINT}."
    )


def _bad_json_message(problem: str, tool: str | None = None) -> str:
    what = f"the arguments of your {tool!r} call" if tool else "your tool call"
    why = f" ({problem})" if problem else ""
    return (
        f"Could not read {what}{why}. Write exactly one tool call as valid JSON: "
        f"{FORMAT_HINT} with double-quoted keys and strings and newlines inside "
        "strings escaped as \\n. If the output was cut off, make the call shorter."
    )


# --------------------------------------------------------------------------- native


def _as_list(tool_calls: Any) -> list[Any]:
    if isinstance(tool_calls, list | tuple):
        return list(tool_calls)
    if isinstance(tool_calls, dict | ToolCall):
        return [tool_calls]
    return []


def _native(
    calls: list[Any], tools: _Tools
) -> tuple[Action | InvalidAction | None, InvalidAction | None]:
    """(outcome of the first named call, an invalid for nameless calls if any)."""
    nameless: InvalidAction | None = None
    for item in calls:
        entry = _native_entry(item)
        if entry is None:
            continue
        name, raw_args, raw_id = entry
        call_id = raw_id.strip() if isinstance(raw_id, str) and raw_id.strip() else _new_id()
        if not isinstance(name, str) or not name.strip():
            if nameless is None:
                message = _bad_json_message("the tool call has no function name")
                nameless = InvalidAction("bad_json", message, None, call_id, "native")
            continue
        args = coerce_args(raw_args, 0)
        problem = "" if args is not None else args_problem(raw_args)
        found = Found(name.strip(), args, problem, call_id)
        return _outcome(found, tools, wrapped=True, source="native"), nameless
    return None, nameless


def _native_entry(item: Any) -> tuple[Any, Any, Any] | None:
    if isinstance(item, ToolCall):
        return item.name, item.arguments, item.id
    if not isinstance(item, dict):
        return None
    fn = item.get("function")
    src = fn if isinstance(fn, dict) else item
    name = src.get("name")
    if name is None and isinstance(fn, str):
        name = fn
    raw_args = next((src[k] for k in ARG_KEYS if k in src), None)
    if name is None and raw_args is None and not isinstance(fn, dict):
        return None  # nothing call-like at all
    return name, raw_args, item.get("id")
