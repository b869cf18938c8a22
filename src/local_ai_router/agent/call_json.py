"""JSON helpers shared by native and text tool calls (see :mod:`.actions`).

Balanced-span scanning, decoding with a bounded ``json_repair`` fallback, argument
coercion (arguments JSON-encoded twice, fenced, or wrapped in a one-item list) and
reading a call out of a decoded value of any common shape. Never raises on model output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import json_repair

__all__ = [
    "ARG_KEYS",
    "OPEN",
    "Budget",
    "Found",
    "args_at",
    "args_problem",
    "balanced_end",
    "coerce_args",
    "json_call",
    "skip_fence",
    "span_call",
    "str_or_none",
]

_NAME_KEYS = ("tool", "tool_name", "name", "function", "action")
ARG_KEYS = ("arguments", "parameters", "args", "input", "action_input")
_WRAPPER_OBJ_KEYS = ("tool_calls", "tool_call", "function_call")
OPEN = re.compile(r"\{|\[(?=\s*\{)")
_STRUCT = re.compile(r'[{}\[\]"\\]')
_HEAD_NAME = re.compile(
    r"""["']?\b(?:tool|tool_name|name|function|action)["']?\s*:\s*["']([^"'\n]{1,200})["']"""
)
_CUT = "the JSON ends inside a string: the output was cut off"


@dataclass(slots=True)
class Found:
    """A call read from text, before its name is checked against the known tools."""

    name: str | None
    args: dict[str, Any] | None
    problem: str = ""
    call_id: str | None = None
    start: int = 0
    end: int = 0


@dataclass(slots=True)
class Budget:
    """How much json_repair (slow, pure Python) a scan of prose may use, in characters."""

    chars: int = 64_000


def args_problem(raw: Any) -> str:
    if isinstance(raw, str):
        return "the arguments are not a valid JSON object, or were cut off"
    return f"the arguments must be a JSON object, not {type(raw).__name__}"


def balanced_end(text: str, start: int, limit: int) -> tuple[int, bool, bool]:
    """(end, closed, cut) for the JSON value opening at ``start``: ``end`` is ``limit``
    when it never closes; ``cut`` says a string was still open at ``limit`` and
    ``limit`` is the end of the text (a truncated reply)."""
    depth = 0
    in_str = False
    skip = -1
    for m in _STRUCT.finditer(text, start, limit):
        i = m.start()
        if i == skip:
            continue
        c = text[i]
        if in_str:
            if c == "\\":
                skip = i + 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1, True, False
    return limit, False, in_str and limit == len(text)


def _load(span: str, budget: Budget | None = None) -> Any:
    """Decode JSON, repairing it if needed (within ``budget``: repair is slow)."""
    span = span.strip()
    if not span:
        return None
    try:
        return json.loads(span, strict=False)  # strict=False: raw newlines in strings
    except (ValueError, RecursionError):
        pass
    if budget is not None:
        if len(span) > budget.chars:
            return None
        budget.chars -= len(span)
    try:
        return json_repair.loads(span, skip_json_loads=True)
    except Exception:
        return None


def coerce_args(value: Any, depth: int) -> dict[str, Any] | None:
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if not isinstance(value, str) or depth > 2:
        return None
    text = value.strip()
    if not text or text == "null":
        return {}
    return args_at(text, 0, len(text), depth)[0]


def args_at(text: str, pos: int, limit: int, depth: int = 0) -> tuple[dict | None, str, int]:
    """Arguments written at ``pos``: (dict or None, problem, end)."""
    pos = skip_fence(text, pos, limit)
    if pos >= limit:
        return {}, "", limit
    if text[pos] == '"':  # arguments JSON-encoded twice
        return coerce_args(_load(text[pos:limit]), depth + 1), "", limit
    if text[pos] not in "{[":
        return None, "the arguments are not a JSON object", limit
    end, _, cut = balanced_end(text, pos, limit)
    if cut:
        return None, _CUT, end
    value = _load(text[pos:end])
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if not isinstance(value, dict):
        return None, "the arguments are not a JSON object", end
    return value, "", end


def skip_fence(text: str, pos: int, limit: int) -> int:
    while pos < limit and text[pos].isspace():
        pos += 1
    if text.startswith("```", pos, limit):
        newline = text.find("\n", pos, limit)
        pos = limit if newline < 0 else newline + 1
        while pos < limit and text[pos].isspace():
            pos += 1
    return pos


def _call_from_obj(obj: Any, depth: int = 0) -> Found:
    """Read a call out of a decoded JSON value of any common shape."""
    if isinstance(obj, list):
        obj = next((o for o in obj if isinstance(o, dict)), None)
    if not isinstance(obj, dict):
        return Found(None, None, "expected a JSON object")
    if depth < 3:
        for key in _WRAPPER_OBJ_KEYS:
            if isinstance(obj.get(key), dict | list):
                return _call_from_obj(obj[key], depth + 1)
        if isinstance(obj.get("function"), dict):
            inner = _call_from_obj(obj["function"], depth + 1)
            inner.call_id = inner.call_id or str_or_none(obj.get("id"))
            return inner
    name = next((obj[k] for k in _NAME_KEYS if isinstance(obj.get(k), str)), None)
    call_id = str_or_none(obj.get("id"))
    if name is None:
        return Found(None, None, "the JSON names no tool", call_id)
    for key in ARG_KEYS:
        if key in obj:
            args = coerce_args(obj[key], 0)
            problem = "" if args is not None else args_problem(obj[key])
            return Found(name, args, problem, call_id)
    # Flat form {"tool": "read_file", "path": "..."}: the other keys are the arguments.
    rest = {k: v for k, v in obj.items() if k not in _NAME_KEYS and k not in ("type", "id")}
    return Found(name, rest, "", call_id)


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def json_call(text: str, pos: int, limit: int) -> Found:
    """The first JSON call object in ``text[pos:limit]``."""
    m = OPEN.search(text, pos, limit)
    if m is None:
        return Found(None, None, "no JSON object found", start=pos, end=limit)
    end, _, cut = balanced_end(text, m.start(), limit)
    found = span_call(text[m.start() : end], cut)
    found.start, found.end = pos, end
    return found


def span_call(span: str, cut: bool, budget: Budget | None = None) -> Found:
    if cut:  # the arguments are lost anyway: read just the name, skip the costly repair
        m = _HEAD_NAME.search(span, 0, 2000)
        return Found(m.group(1) if m else None, None, _CUT)
    return _call_from_obj(_load(span, budget))
