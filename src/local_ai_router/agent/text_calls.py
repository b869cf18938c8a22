"""Reading a tool call out of reply text, in each model family's own markup.

Hermes/Qwen ``<tool_call>``, Qwen3-Coder XML, GLM ``<arg_key>`` pairs, Llama
``<|python_tag|>`` and pythonic lists, Mistral ``[TOOL_CALLS]``, Functionary v3.1/v3.2,
Granite, DeepSeek/Kimi markers, and bare or fenced JSON. The readers only *find* a call
(:class:`.call_json.Found`); whether it is an action, an invalid action or nothing is
decided by the ``judge`` :func:`from_text` is given, which :mod:`.actions` owns (it knows
the tools). Nothing here raises on model output.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any, Protocol

from ..types import Action, InvalidAction
from .call_json import (
    OPEN,
    Budget,
    Found,
    args_at,
    balanced_end,
    json_call,
    skip_fence,
    span_call,
    str_or_none,
)

__all__ = ["Judge", "from_text"]

_MAX_SCAN = 24  # unwrapped JSON candidates tried per reply: bounds the worst case

# Cheap pre-check: without any of these no format can match.
_MAYBE_CALL = re.compile(r"[{<\[]|>>>")
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
_NAME_KEY = re.compile(r"""\b(?:name|tool|tool_name|function|action)["']?\s*:""")
_FV32_ALL = re.compile(r">>>all[ \t]*\n?")


class Judge(Protocol):
    """What a found call means: an action, an invalid action, or (unwrapped junk) nothing."""

    def __call__(self, found: Found, *, wrapped: bool) -> Action | InvalidAction | None: ...


# --------------------------------------------------------------------------- text


def from_text(text: str, judge: Judge) -> tuple[str, Action | InvalidAction | None]:
    """(visible text without the call's markup, what the text asks for)."""
    if not _MAYBE_CALL.search(text):  # fast path: plain prose
        return _clean(text), None
    pos, spans = 0, None
    for _ in range(_MAX_SCAN):
        m = _WRAPPER.search(text, pos)
        if m is None:
            break
        if spans is None:  # computed only when JSON comes before a marker
            spans = _json_spans(text) if OPEN.search(text, 0, m.start()) else []
        pos = _quoted_end(text, spans, m.start())
        if pos > m.start():  # the marker is text inside a JSON string: skip that JSON
            continue
        found = _wrapped(text, m)
        if found is not None:
            outcome = judge(found, wrapped=True)
            return _around(text, found.start, found.end), outcome
        pos = m.end()
    hit = _unwrapped(text, judge)
    if hit is None:
        return _clean(text), None
    found, outcome = hit
    return _around(text, found.start, found.end), outcome


def _json_spans(text: str) -> list[tuple[int, int]]:
    """Top-level closed JSON-looking spans (a bounded number of them)."""
    spans: list[tuple[int, int]] = []
    pos, unclosed = 0, 0
    while len(spans) < _MAX_SCAN and unclosed <= 2 and (m := OPEN.search(text, pos)):
        end, closed, _ = balanced_end(text, m.start(), len(text))
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


def _wrapped(text: str, m: re.Match[str]) -> Found | None:
    """The call behind an explicit tool-call marker; None when the marker is not one."""
    kind = m.lastgroup
    found: Found | None
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


def _hermes(text: str, pos: int) -> Found:
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
    p = skip_fence(text, pos, len(text))
    if not text.startswith("{", p):
        return pos
    end, closed, _ = balanced_end(text, p, len(text))
    if not closed or "<" not in text[p:end]:  # no tag could hide inside: nothing to do
        return pos
    return end if _valid_json(text[p:end]) else pos


def _valid_json(span: str) -> bool:
    try:
        json.loads(span, strict=False)
    except (ValueError, RecursionError):
        return False
    return True


def _body(text: str, pos: int, limit: int) -> Found:
    """A wrapper's body: JSON, Qwen3-Coder XML, or ``NAME`` then arguments (GLM style)."""
    p = skip_fence(text, pos, limit)
    if text.startswith("<function=", p, limit):
        return _function_tag(text, p, limit)
    if p < limit and text[p] not in "{[":
        m = _BARE_NAME.match(text, p, limit)
        if m is not None and m.group(1).lower() not in ("json", "tool_call", "function"):
            return _name_then_args(text, m.group(1), m.end(1), limit)
    return json_call(text, p, limit)


def _name_then_args(text: str, name: str, pos: int, limit: int) -> Found:
    if text.find("<arg_key>", pos, limit) >= 0:
        return Found(name, _glm_args(text, pos, limit), "", end=limit)
    args, problem, end = args_at(text, pos, limit)
    return Found(name, args, problem, end=end)


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


def _function_tag(text: str, pos: int, limit: int) -> Found:
    """Functionary v3.1 ``<function=NAME>{json}</function>`` and Qwen3-Coder
    ``<function=NAME><parameter=P>value</parameter></function>``."""
    m = _FUNC_OPEN.match(text, pos, limit)
    if m is None:
        return Found(None, None, "malformed <function=NAME> tag", start=pos, end=limit)
    inner = min(_valid_json_end(text, m.end()), limit)  # JSON may quote "</function>"
    close = text.find("</function>", inner, limit)
    body_end = close if close >= 0 else limit
    end = close + len("</function>") if close >= 0 else limit
    if text.startswith("<parameter=", skip_fence(text, m.end(), body_end)):
        args = _xml_params(text, m.end(), body_end)
        problem = "" if args is not None else "a <parameter> was cut off"
    else:
        args, problem, _ = args_at(text, m.end(), body_end)
    return Found(m.group(1).strip(), args, problem, start=pos, end=end)


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


def _mistral(text: str, pos: int) -> Found:
    """``[TOOL_CALLS] [{...}]`` (v3) or ``[TOOL_CALLS]name[ARGS]{...}`` (v11)."""
    p = skip_fence(text, pos, len(text))
    if p < len(text) and text[p] in "{[":
        return json_call(text, p, len(text))
    m = _MISTRAL_NAME.match(text, pos)
    if m is None:
        return Found(None, None, "expected [TOOL_CALLS]name[ARGS]{...}", end=len(text))
    args, problem, end = _args_before(text, m.end(), "[TOOL_CALLS]")
    return Found(m.group(1), args, problem, str_or_none(m.group(2)), end=end)


def _tagged_json(text: str, pos: int, *, python: bool) -> Found:
    """Granite ``<|tool_call|>[...]`` and Llama ``<|python_tag|>{...}`` (or a Python call)."""
    found = json_call(text, pos, len(text))
    if found.name is None and python:
        code = _pythonic(text[pos:], bare=True)
        if code is not None:
            code.end = len(text)
            return code
    return found


def _deepseek(text: str, start: int) -> Found:
    """DeepSeek V3/R1 (``function<sep>NAME`` + fenced JSON), V3.1 (``NAME<sep>{json}``)
    and Kimi K2 (``functions.NAME:0<argument_begin>{json}``)."""
    b = _DS_CALL_BEGIN.search(text, start)
    if b is None:
        return Found(None, None, "no call after the tool-calls marker", end=len(text))
    e = _DS_CALL_END.search(text, b.end())
    body_end, end = (e.start(), e.end()) if e else (len(text), len(text))
    sep = _DS_SEP.search(text, b.end(), body_end)
    if sep is None:
        found = json_call(text, b.end(), body_end)
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
    args, problem, _ = args_at(text, pos, body_end)
    return Found(name or None, args, problem or ("" if name else "no tool name"), end=end)


def _fv32(text: str, start: int) -> Found | None:
    """Functionary v3.2 ``>>>NAME\\n{json}``; ``>>>all`` introduces plain text."""
    m = _FV32_NAME.match(text, start)
    if m is None or m.group(1) == "all":
        return None
    args, problem, end = _args_before(text, m.end(), ">>>")
    return Found(m.group(1), args, problem, start=start, end=end)


def _args_before(text: str, pos: int, marker: str) -> tuple[dict | None, str, int]:
    """Arguments at ``pos``, or none when the next call's ``marker`` comes first."""
    p = skip_fence(text, pos, len(text))
    if p >= len(text) or text.startswith(marker, p):
        return {}, "", p
    return args_at(text, p, len(text))


def _unwrapped(text: str, judge: Judge) -> tuple[Found, Action | InvalidAction] | None:
    """A call written as plain JSON (or a pythonic list); it must name a known tool."""
    code = _pythonic(text, bare=False)
    if code is not None:
        outcome = judge(code, wrapped=False)
        if outcome is not None:
            return code, outcome
    pos, budget, unclosed = 0, Budget(), 0
    for _ in range(_MAX_SCAN):
        m = OPEN.search(text, pos)
        if m is None:
            return None
        end, closed, cut = balanced_end(text, m.start(), len(text))
        span = text[m.start() : end]
        if _NAME_KEY.search(span):
            found = span_call(span, cut, budget)
            found.start, found.end = m.start(), end
            if not _is_schema(found):
                outcome = judge(found, wrapped=False)
                if outcome is not None:
                    return found, outcome
        unclosed += not closed
        if unclosed > 2:  # each unclosed candidate costs a scan to the end: bound them
            return None
        pos = end if closed else m.start() + 1  # unclosed: a call may start inside it
    return None


def _is_schema(found: Found) -> bool:
    """A tool *definition* echoed back (``parameters`` is a JSON schema) is no call."""
    args = found.args or {}
    return args.get("type") == "object" and isinstance(args.get("properties"), dict)


def _pythonic(text: str, *, bare: bool) -> Found | None:
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
    return Found(name, args, "", start=text.find(s[0]), end=len(text))


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
