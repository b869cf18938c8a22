"""One assistant reply -> exactly one action, a plain message, or an invalid action.

Weak local models call tools in many dialects: native ``tool_calls`` (sometimes with
broken arguments), or text in the family's own markup (Hermes/Qwen ``<tool_call>``,
Qwen3-Coder XML, Llama ``<|python_tag|>``, Mistral ``[TOOL_CALLS]``, Functionary,
Granite, DeepSeek/Kimi markers) or bare/fenced JSON. This module reads them all.

Rules: native calls win over text; the first call is the only one run; nothing inside
``<think>`` is ever executed; broken JSON is repaired with ``json_repair`` where the
meaning is clear (but never when the text ends inside a string: that is a truncated
value, and running it would e.g. write half a file). JSON outside an explicit
tool-call wrapper counts only when it names a known tool; inside a wrapper an unknown
name or unreadable JSON becomes an :class:`InvalidAction` the model can learn from.
The parser never raises: model output is untrusted input.
"""

from __future__ import annotations

import ast
import difflib
import json
import logging
import math
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import json_repair

from ..types import Action, InvalidAction, ParsedReply, ToolCall

__all__ = ["parse_arguments", "parse_reply", "strip_thinking"]

_log = logging.getLogger(__name__)

FORMAT_HINT = '{"name": "<tool>", "arguments": {...}}'

_NAME_KEYS = ("tool", "tool_name", "name", "function", "action")
_ARG_KEYS = ("arguments", "parameters", "args", "input", "action_input")
_WRAPPER_OBJ_KEYS = ("tool_calls", "tool_call", "function_call")
_END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>")
_END_TOKENS += ("<|call|>", "<｜end▁of▁sentence｜>", "</s>")
_MAX_SCAN = 24  # unwrapped JSON candidates tried per reply: bounds the worst case
_MAX_LISTED = 60  # tool names listed in an unknown_tool message

# Cheap pre-check: without any of these no format can match.
_MAYBE_CALL = re.compile(r"[{<\[]|>>>")
_THINK_TAG = re.compile(r"<(/?)think(?:ing)?>", re.IGNORECASE)
_HERMES = r"(?:tool_call|toolcall|function_call|functioncall)"
_HERMES_OPEN = re.compile(rf"<{_HERMES}>")
_HERMES_CLOSE = re.compile(rf"</{_HERMES}>")
_DS = "[|｜]"  # DeepSeek uses fullwidth bars and ▁; some GGUF builds render them ASCII
_DS_CALL_BEGIN = re.compile(rf"<{_DS}tool[_▁]call[_▁]begin{_DS}>")
_DS_CALL_END = re.compile(rf"<{_DS}tool[_▁]calls?(?:[_▁]section)?[_▁]end{_DS}>")
_DS_SEP = re.compile(rf"<{_DS}tool[_▁]sep{_DS}>|<\|tool_call_argument_begin\|>")
_WRAPPER = re.compile(
    rf"(?P<hermes><{_HERMES}>)"
    r"|(?P<granite><\|tool_call\|>)"
    r"|(?P<mistral>\[TOOL_CALLS\])"
    r"|(?P<function><function=)"
    r"|(?P<python><\|python_tag\|>)"
    rf"|(?P<deepseek><{_DS}tool[_▁]calls?(?:[_▁]section)?[_▁]begin{_DS}>)"
    r"|(?P<fv32>>>>(?=[A-Za-z_]))"
)
_CLOSERS = re.compile(
    rf"</{_HERMES}>|</function>|<\|/tool_call\|>|<{_DS}tool[_▁]calls?(?:[_▁]section)?[_▁]end{_DS}>"
)
_FUNC_OPEN = re.compile(r"<function=([^>\n]{1,200})>")
_PARAM_OPEN = re.compile(r"<parameter=([^>\n]{1,200})>")
_FV32_NAME = re.compile(r">>>([A-Za-z_][\w.\-]{0,199})[ \t]*(?:\n|(?=\{)|\Z)")
_MISTRAL_NAME = re.compile(
    r"\s*([^\s\[\]{}]{1,200})\s*(?:\[CALL_ID\]([^\[{]{0,100}))?(?:\[ARGS\])?"
)
_BARE_NAME = re.compile(r"([\w.\-]{1,200})[ \t]*(?:\n|<arg_key>|\{|\Z)")
_OPEN = re.compile(r"\{|\[(?=\s*\{)")
_NAME_KEY = re.compile(r"""\b(?:name|tool|tool_name|function|action)["']?\s*:""")
_STRUCT = re.compile(r'[{}\[\]"\\]')
_FV32_ALL = re.compile(r">>>all[ \t]*\n?")
_HEAD_NAME = re.compile(
    r"""["']?\b(?:tool|tool_name|name|function|action)["']?\s*:\s*["']([^"'\n]{1,200})["']"""
)
_CUT = "the JSON ends inside a string: the output was cut off"


@dataclass(slots=True)
class _Found:
    """A call read from text, before its name is checked against the known tools."""

    name: str | None
    args: dict[str, Any] | None
    problem: str = ""
    call_id: str | None = None
    start: int = 0
    end: int = 0


@dataclass(slots=True)
class _Budget:
    """How much json_repair (slow, pure Python) a scan of prose may use, in characters."""

    chars: int = 64_000


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
    return _coerce_args(raw, 0)


# --------------------------------------------------------------------------- driver


def _parse(content: Any, tool_calls: Any, known_tools: Collection[str]) -> ParsedReply:
    visible, thinking = strip_thinking(_content_text(content))
    visible = _strip_end_tokens(visible)
    tools = _tools(known_tools)
    calls = _as_list(tool_calls)
    if calls:
        outcome, nameless = _native(calls, tools)
        text, found = _from_text(visible, tools)  # text: the prose, markup removed
        if outcome is not None:
            return _reply(text, outcome, thinking)
        return _reply(text, found if found is not None else nameless, thinking)
    text, found = _from_text(visible, tools)
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
    found: _Found, tools: _Tools, *, wrapped: bool, source: Literal["native", "text"]
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
        args = _coerce_args(raw_args, 0)
        problem = "" if args is not None else _args_problem(raw_args)
        found = _Found(name.strip(), args, problem, call_id)
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
    raw_args = next((src[k] for k in _ARG_KEYS if k in src), None)
    if name is None and raw_args is None and not isinstance(fn, dict):
        return None  # nothing call-like at all
    return name, raw_args, item.get("id")


def _args_problem(raw: Any) -> str:
    if isinstance(raw, str):
        return "the arguments are not a valid JSON object, or were cut off"
    return f"the arguments must be a JSON object, not {type(raw).__name__}"


# --------------------------------------------------------------------------- JSON helpers


def _balanced_end(text: str, start: int, limit: int) -> tuple[int, bool, bool]:
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


def _load(span: str, budget: _Budget | None = None) -> Any:
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


def _coerce_args(value: Any, depth: int) -> dict[str, Any] | None:
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if not isinstance(value, str) or depth > 2:
        return None
    text = value.strip()
    if not text or text == "null":
        return {}
    return _args_at(text, 0, len(text), depth)[0]


def _args_at(text: str, pos: int, limit: int, depth: int = 0) -> tuple[dict | None, str, int]:
    """Arguments written at ``pos``: (dict or None, problem, end)."""
    pos = _skip_fence(text, pos, limit)
    if pos >= limit:
        return {}, "", limit
    if text[pos] == '"':  # arguments JSON-encoded twice
        return _coerce_args(_load(text[pos:limit]), depth + 1), "", limit
    if text[pos] not in "{[":
        return None, "the arguments are not a JSON object", limit
    end, _, cut = _balanced_end(text, pos, limit)
    if cut:
        return None, _CUT, end
    value = _load(text[pos:end])
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if not isinstance(value, dict):
        return None, "the arguments are not a JSON object", end
    return value, "", end


def _skip_fence(text: str, pos: int, limit: int) -> int:
    while pos < limit and text[pos].isspace():
        pos += 1
    if text.startswith("```", pos, limit):
        newline = text.find("\n", pos, limit)
        pos = limit if newline < 0 else newline + 1
        while pos < limit and text[pos].isspace():
            pos += 1
    return pos


def _call_from_obj(obj: Any, depth: int = 0) -> _Found:
    """Read a call out of a decoded JSON value of any common shape."""
    if isinstance(obj, list):
        obj = next((o for o in obj if isinstance(o, dict)), None)
    if not isinstance(obj, dict):
        return _Found(None, None, "expected a JSON object")
    if depth < 3:
        for key in _WRAPPER_OBJ_KEYS:
            if isinstance(obj.get(key), dict | list):
                return _call_from_obj(obj[key], depth + 1)
        if isinstance(obj.get("function"), dict):
            inner = _call_from_obj(obj["function"], depth + 1)
            inner.call_id = inner.call_id or _str_or_none(obj.get("id"))
            return inner
    name = next((obj[k] for k in _NAME_KEYS if isinstance(obj.get(k), str)), None)
    call_id = _str_or_none(obj.get("id"))
    if name is None:
        return _Found(None, None, "the JSON names no tool", call_id)
    for key in _ARG_KEYS:
        if key in obj:
            args = _coerce_args(obj[key], 0)
            problem = "" if args is not None else _args_problem(obj[key])
            return _Found(name, args, problem, call_id)
    # Flat form {"tool": "read_file", "path": "..."}: the other keys are the arguments.
    rest = {k: v for k, v in obj.items() if k not in _NAME_KEYS and k not in ("type", "id")}
    return _Found(name, rest, "", call_id)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _json_call(text: str, pos: int, limit: int) -> _Found:
    """The first JSON call object in ``text[pos:limit]``."""
    m = _OPEN.search(text, pos, limit)
    if m is None:
        return _Found(None, None, "no JSON object found", start=pos, end=limit)
    end, _, cut = _balanced_end(text, m.start(), limit)
    found = _span_call(text[m.start() : end], cut)
    found.start, found.end = pos, end
    return found


def _span_call(span: str, cut: bool, budget: _Budget | None = None) -> _Found:
    if cut:  # the arguments are lost anyway: read just the name, skip the costly repair
        m = _HEAD_NAME.search(span, 0, 2000)
        return _Found(m.group(1) if m else None, None, _CUT)
    return _call_from_obj(_load(span, budget))


def _scalar_or_text(raw: str) -> Any:
    """An XML-style parameter value: JSON number/bool/object/array, else the string."""
    if raw.startswith("\n"):
        raw = raw[1:]
    if raw.endswith("\n"):
        raw = raw[:-1]
    probe = raw.strip()
    if probe and (probe[0] in "{[-tf" or probe[0].isdigit()):
        try:
            value = json.loads(probe)
        except (ValueError, RecursionError):
            return raw
        if isinstance(value, dict | list | bool | int) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            return value
    return raw


# --------------------------------------------------------------------------- text


def _from_text(text: str, tools: _Tools) -> tuple[str, Action | InvalidAction | None]:
    """(visible text without the call's markup, what the text asks for)."""
    if not _MAYBE_CALL.search(text):  # fast path: plain prose
        return _clean(text), None
    pos, spans = 0, None
    for _ in range(_MAX_SCAN):
        m = _WRAPPER.search(text, pos)
        if m is None:
            break
        if spans is None:  # computed only when JSON comes before a marker
            spans = _json_spans(text) if _OPEN.search(text, 0, m.start()) else []
        pos = _quoted_end(text, spans, m.start())
        if pos > m.start():  # the marker is text inside a JSON string: skip that JSON
            continue
        found = _wrapped(text, m)
        if found is not None:
            outcome = _outcome(found, tools, wrapped=True, source="text")
            return _around(text, found.start, found.end), outcome
        pos = m.end()
    hit = _unwrapped(text, tools)
    if hit is None:
        return _clean(text), None
    found, outcome = hit
    return _around(text, found.start, found.end), outcome


def _json_spans(text: str) -> list[tuple[int, int]]:
    """Top-level closed JSON-looking spans (a bounded number of them)."""
    spans: list[tuple[int, int]] = []
    pos, unclosed = 0, 0
    while len(spans) < _MAX_SCAN and unclosed <= 2 and (m := _OPEN.search(text, pos)):
        end, closed, _ = _balanced_end(text, m.start(), len(text))
        if closed:
            spans.append((m.start(), end))
        unclosed += not closed
        pos = end if closed else m.start() + 1
    return spans


def _quoted_end(text: str, spans: list[tuple[int, int]], pos: int) -> int:
    """End of the valid JSON span ``pos`` sits in (a marker quoted in a string), else -1."""
    for start, end in spans:
        if start < pos < end:
            return end if _valid_json(text[start:end]) else -1
    return -1


def _wrapped(text: str, m: re.Match[str]) -> _Found | None:
    """The call behind an explicit tool-call marker; None when the marker is not one."""
    kind = m.lastgroup
    found: _Found | None
    if kind == "hermes":
        found = _hermes(text, m.end())
    elif kind == "function":
        found = _function_tag(text, m.start(), len(text))
    elif kind == "mistral":
        found = _mistral(text, m.end())
    elif kind == "deepseek":
        found = _deepseek(text, m.start())
    elif kind == "fv32":
        found = _fv32(text, m.start())
    else:  # granite, python_tag
        found = _tagged_json(text, m.end(), python=kind == "python")
    if found is not None:
        found.start = m.start()
        found.end = max(found.end, m.end())
    return found


def _hermes(text: str, pos: int) -> _Found:
    inner = _valid_json_end(text, pos)  # valid JSON may quote the tags in its strings
    close = _HERMES_CLOSE.search(text, inner)
    again = _HERMES_OPEN.search(text, inner)
    limit = close.start() if close else len(text)
    end = close.end() if close else len(text)
    if again is not None and again.start() < limit:  # unclosed, and another call follows
        limit = end = again.start()
    found = _body(text, pos, limit)
    found.end = end
    return found


def _valid_json_end(text: str, pos: int) -> int:
    p = _skip_fence(text, pos, len(text))
    if not text.startswith("{", p):
        return pos
    end, closed, _ = _balanced_end(text, p, len(text))
    if not closed or "<" not in text[p:end]:  # no tag could hide inside: nothing to do
        return pos
    return end if _valid_json(text[p:end]) else pos


def _valid_json(span: str) -> bool:
    try:
        json.loads(span, strict=False)
    except (ValueError, RecursionError):
        return False
    return True


def _body(text: str, pos: int, limit: int) -> _Found:
    """A wrapper's body: JSON, Qwen3-Coder XML, or ``NAME`` then arguments (GLM style)."""
    p = _skip_fence(text, pos, limit)
    if text.startswith("<function=", p, limit):
        return _function_tag(text, p, limit)
    if p < limit and text[p] not in "{[":
        m = _BARE_NAME.match(text, p, limit)
        if m is not None and m.group(1).lower() not in ("json", "tool_call", "function"):
            return _name_then_args(text, m.group(1), m.end(1), limit)
    return _json_call(text, p, limit)


def _name_then_args(text: str, name: str, pos: int, limit: int) -> _Found:
    if text.find("<arg_key>", pos, limit) >= 0:
        return _Found(name, _glm_args(text, pos, limit), "", end=limit)
    args, problem, end = _args_at(text, pos, limit)
    return _Found(name, args, problem, end=end)


def _glm_args(text: str, pos: int, limit: int) -> dict[str, Any]:
    """GLM-4.5: ``<arg_key>k</arg_key><arg_value>v</arg_value>`` pairs."""
    args: dict[str, Any] = {}
    while True:
        k = text.find("<arg_key>", pos, limit)
        k_end = text.find("</arg_key>", k, limit) if k >= 0 else -1
        if k_end < 0:
            return args
        v = text.find("<arg_value>", k_end, limit)
        v_end = text.find("</arg_value>", v, limit) if v >= 0 else -1
        v_end = limit if v_end < 0 else v_end
        value = text[v + len("<arg_value>") : v_end] if v >= 0 else ""
        args[text[k + len("<arg_key>") : k_end].strip()] = _scalar_or_text(value)
        pos = max(v_end, k_end + 1)


def _function_tag(text: str, pos: int, limit: int) -> _Found:
    """Functionary v3.1 ``<function=NAME>{json}</function>`` and Qwen3-Coder
    ``<function=NAME><parameter=P>value</parameter></function>``."""
    m = _FUNC_OPEN.match(text, pos, limit)
    if m is None:
        return _Found(None, None, "malformed <function=NAME> tag", start=pos, end=limit)
    inner = min(_valid_json_end(text, m.end()), limit)  # JSON may quote "</function>"
    close = text.find("</function>", inner, limit)
    body_end = close if close >= 0 else limit
    end = close + len("</function>") if close >= 0 else limit
    if text.startswith("<parameter=", _skip_fence(text, m.end(), body_end)):
        args = _xml_params(text, m.end(), body_end)
        problem = "" if args is not None else "a <parameter> was cut off"
    else:
        args, problem, _ = _args_at(text, m.end(), body_end)
    return _Found(m.group(1).strip(), args, problem, start=pos, end=end)


def _xml_params(text: str, pos: int, limit: int) -> dict[str, Any] | None:
    args: dict[str, Any] = {}
    m = _PARAM_OPEN.search(text, pos, limit)
    while m is not None:
        nxt = _PARAM_OPEN.search(text, m.end(), limit)
        stop = nxt.start() if nxt else limit
        close = text.find("</parameter>", m.end(), stop)
        if close < 0 and stop == len(text):
            return None  # the reply ended inside a value: it is truncated
        args[m.group(1).strip()] = _scalar_or_text(text[m.end() : close if close >= 0 else stop])
        m = nxt
    return args


def _mistral(text: str, pos: int) -> _Found:
    """``[TOOL_CALLS] [{...}]`` (v3) or ``[TOOL_CALLS]name[ARGS]{...}`` (v11)."""
    p = _skip_fence(text, pos, len(text))
    if p < len(text) and text[p] in "{[":
        return _json_call(text, p, len(text))
    m = _MISTRAL_NAME.match(text, pos)
    if m is None:
        return _Found(None, None, "expected [TOOL_CALLS]name[ARGS]{...}", end=len(text))
    args, problem, end = _args_before(text, m.end(), "[TOOL_CALLS]")
    return _Found(m.group(1), args, problem, _str_or_none(m.group(2)), end=end)


def _tagged_json(text: str, pos: int, *, python: bool) -> _Found:
    """Granite ``<|tool_call|>[...]`` and Llama ``<|python_tag|>{...}`` (or a Python call)."""
    found = _json_call(text, pos, len(text))
    if found.name is None and python:
        code = _pythonic(text[pos:], bare=True)
        if code is not None:
            code.end = len(text)
            return code
    return found


def _deepseek(text: str, start: int) -> _Found:
    """DeepSeek V3/R1 (``function<sep>NAME`` + fenced JSON), V3.1 (``NAME<sep>{json}``)
    and Kimi K2 (``functions.NAME:0<argument_begin>{json}``)."""
    b = _DS_CALL_BEGIN.search(text, start)
    if b is None:
        return _Found(None, None, "no call after the tool-calls marker", end=len(text))
    e = _DS_CALL_END.search(text, b.end())
    body_end, end = (e.start(), e.end()) if e else (len(text), len(text))
    sep = _DS_SEP.search(text, b.end(), body_end)
    if sep is None:
        found = _json_call(text, b.end(), body_end)
        found.end = end
        return found
    name = text[b.end() : sep.start()].strip()
    pos = sep.end()
    if name == "function" and not text[pos:body_end].lstrip().startswith("{"):
        newline = text.find("\n", pos, body_end)
        name_end = newline if newline >= 0 else body_end
        name, pos = text[pos:name_end].strip(), name_end
    head, colon, index = name.rpartition(":")
    if colon and index.isdigit():
        name = head
    args, problem, _ = _args_at(text, pos, body_end)
    return _Found(name or None, args, problem or ("" if name else "no tool name"), end=end)


def _fv32(text: str, start: int) -> _Found | None:
    """Functionary v3.2 ``>>>NAME\\n{json}``; ``>>>all`` introduces plain text."""
    m = _FV32_NAME.match(text, start)
    if m is None or m.group(1) == "all":
        return None
    args, problem, end = _args_before(text, m.end(), ">>>")
    return _Found(m.group(1), args, problem, start=start, end=end)


def _args_before(text: str, pos: int, marker: str) -> tuple[dict | None, str, int]:
    """Arguments at ``pos``, or none when the next call's ``marker`` comes first."""
    p = _skip_fence(text, pos, len(text))
    if p >= len(text) or text.startswith(marker, p):
        return {}, "", p
    return _args_at(text, p, len(text))


def _unwrapped(text: str, tools: _Tools) -> tuple[_Found, Action | InvalidAction] | None:
    """A call written as plain JSON (or a pythonic list); it must name a known tool."""
    code = _pythonic(text, bare=False)
    if code is not None:
        outcome = _outcome(code, tools, wrapped=False, source="text")
        if outcome is not None:
            return code, outcome
    pos, budget, unclosed = 0, _Budget(), 0
    for _ in range(_MAX_SCAN):
        m = _OPEN.search(text, pos)
        if m is None:
            return None
        end, closed, cut = _balanced_end(text, m.start(), len(text))
        span = text[m.start() : end]
        if _NAME_KEY.search(span):
            found = _span_call(span, cut, budget)
            found.start, found.end = m.start(), end
            if not _is_schema(found):
                outcome = _outcome(found, tools, wrapped=False, source="text")
                if outcome is not None:
                    return found, outcome
        unclosed += not closed
        if unclosed > 2:  # each unclosed candidate costs a scan to the end: bound them
            return None
        pos = end if closed else m.start() + 1  # unclosed: a call may start inside it
    return None


def _is_schema(found: _Found) -> bool:
    """A tool *definition* echoed back (``parameters`` is a JSON schema) is no call."""
    args = found.args or {}
    return args.get("type") == "object" and isinstance(args.get("properties"), dict)


def _pythonic(text: str, *, bare: bool) -> _Found | None:
    """Llama 3.2 style ``[tool(a=1)]`` (or ``tool.call(a=1)`` after ``<|python_tag|>``)."""
    s = text.strip()
    if not s or len(s) > 20_000 or (not bare and not (s[0] == "[" and s[-1] == "]")):
        return None
    try:
        node = ast.parse(s, mode="eval").body
        if isinstance(node, ast.List) and node.elts:
            node = node.elts[0]
        if not isinstance(node, ast.Call) or node.args:
            return None
        name = _dotted(node.func)
        args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        if name is None or len(args) != len(node.keywords):
            return None
        args = json.loads(json.dumps(args))  # tuples -> lists; sets etc. fail
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return None
    name = name.removesuffix(".call")  # Llama built-ins: brave_search.call(query=...)
    return _Found(name, args, "", start=text.find(s[0]), end=len(text))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _around(text: str, start: int, end: int) -> str:
    """The prose around a call: later calls (not run) and closing tags are dropped."""
    before, after = text[:start], text[end:]
    after = "" if _WRAPPER.search(after) else _CLOSERS.sub("", after)
    stripped = before.rstrip()
    fence = stripped.rfind("```")
    if fence >= 0 and after.lstrip().startswith("```"):
        tag = stripped[fence + 3 :]
        if not tag or tag.replace("-", "_").isidentifier():  # the call sat in a fence
            before, after = stripped[:fence], after.lstrip()[3:]
    parts = (_clean(before), _clean(after))
    return "\n".join(p for p in parts if p)


def _clean(text: str) -> str:
    return _FV32_ALL.sub("", text).strip() if ">>>" in text else text.strip()
