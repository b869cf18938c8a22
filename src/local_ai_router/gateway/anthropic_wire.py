"""Anthropic Messages <-> OpenAI chat completions, both directions, streams included.

Pure functions and one small state machine; no I/O. :mod:`.messages_api` serves
them as ``POST /v1/messages`` so Anthropic clients (Claude Code with
``ANTHROPIC_BASE_URL``, the ``anthropic`` SDK) reach the same backends, aliases
and fallbacks as OpenAI clients.

What does not translate is dropped, never an error: ``thinking`` settings,
``top_k``, ``metadata``, effort, cache-control markers, server-side tools without
an ``input_schema``. Images become OpenAI ``image_url`` parts (base64 as data
URLs); ``output_config.format`` (structured output) becomes ``response_format``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import json_repair

__all__ = [
    "AnthropicRequestError",
    "StreamTranslator",
    "error_body",
    "error_type",
    "message_from_openai",
    "openai_request",
    "sse_event",
]

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class AnthropicRequestError(ValueError):
    """A request body the Messages API would refuse; the message names the field."""


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# --------------------------------------------------------------------------- requests


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise AnthropicRequestError(message)


def _text_of(content: Any, where: str) -> str:
    """A string, or the text of a list of text blocks (system prompts, tool results)."""
    if isinstance(content, str):
        return content
    _need(isinstance(content, list), f"{where}: must be a string or a list of content blocks")
    parts = []
    for i, block in enumerate(content):
        _need(isinstance(block, dict), f"{where}[{i}]: must be a content block object")
        if block.get("type") == "text":
            parts.append(str(block.get("text") or ""))
        elif block.get("type") == "image":
            parts.append("[image]")
    return "\n".join(parts)


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = block.get("source")
    _need(isinstance(src, dict), f"{where}.source: required for an image block")
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type') or 'image/png'};base64,{src.get('data') or ''}"
    elif src.get("type") == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    else:
        raise AnthropicRequestError(f"{where}.source.type: must be 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_messages(content: Any, where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn: its tool results (OpenAI ``tool`` messages) come first."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    _need(isinstance(content, list), f"{where}.content: must be a string or a list of blocks")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.content[{i}]"
        _need(isinstance(block, dict), f"{at}: must be a content block object")
        kind = block.get("type")
        if kind == "tool_result":
            _need(isinstance(block.get("tool_use_id"), str), f"{at}.tool_use_id: required")
            text = _text_of(block.get("content") or "", f"{at}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text") or "")})
        elif kind == "image":
            parts.append(_image_part(block, at))
        # documents, search results, thinking: nothing a local model can use
    if parts:
        plain = all(p["type"] == "text" for p in parts)
        text = "\n".join(p["text"] for p in parts) if plain else None
        out.append({"role": "user", "content": text if plain else parts})
    return out


def _assistant_message(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    _need(isinstance(content, list), f"{where}.content: must be a string or a list of blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.content[{i}]"
        _need(isinstance(block, dict), f"{at}: must be a content block object")
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            _need(isinstance(block.get("name"), str), f"{at}.name: required for tool_use")
            args = block.get("input") if isinstance(block.get("input"), dict) else {}
            calls.append(
                {
                    "id": str(block.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"),
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json.dumps(args)},
                }
            )
    msg: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) or None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tools(tools: Any) -> list[dict[str, Any]]:
    _need(isinstance(tools, list), "tools: must be a list")
    out = []
    for i, t in enumerate(tools):
        _need(isinstance(t, dict) and isinstance(t.get("name"), str), f"tools[{i}].name: required")
        schema = t.get("input_schema")
        if not isinstance(schema, dict):
            continue  # a server tool (web search, code execution): nothing to run it here
        fn = {"name": t["name"], "parameters": schema}
        if t.get("description"):
            fn["description"] = str(t["description"])
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    _need(isinstance(choice, dict), "tool_choice: must be an object with a type")
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        _need(isinstance(choice.get("name"), str), "tool_choice.name: required for type 'tool'")
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise AnthropicRequestError("tool_choice.type: must be auto, any, tool or none")


def _output_schema(config: Any) -> dict[str, Any] | None:
    """``output_config.format`` (structured output) as a JSON schema; effort is dropped."""
    if config is None:
        return None
    _need(isinstance(config, dict), "output_config: must be an object")
    fmt = config.get("format")
    if fmt is None:
        return None
    _need(
        isinstance(fmt, dict) and fmt.get("type") == "json_schema",
        "output_config.format.type: must be 'json_schema'",
    )
    _need(isinstance(fmt.get("schema"), dict), "output_config.format.schema: must be an object")
    return fmt["schema"]


def _check_top(body: Any) -> None:
    _need(isinstance(body, dict), "the request body must be a JSON object")
    _need(isinstance(body.get("model"), str) and body["model"], "model: required (a string)")
    mt = body.get("max_tokens")
    _need(
        isinstance(mt, int) and not isinstance(mt, bool) and mt > 0,
        "max_tokens: required (a positive integer)",
    )
    _need(
        isinstance(body.get("messages"), list) and body["messages"],
        "messages: required (a non-empty list)",
    )


def openai_request(body: Any) -> dict[str, Any]:
    """The OpenAI chat body for an Anthropic Messages request (raises on a bad one)."""
    _check_top(body)
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text_of(body["system"], "system")})
    for i, m in enumerate(body["messages"]):
        where = f"messages[{i}]"
        _need(isinstance(m, dict), f"{where}: must be an object")
        if m.get("role") == "user":
            messages.extend(_user_messages(m.get("content"), where))
        elif m.get("role") == "assistant":
            messages.append(_assistant_message(m.get("content"), where))
        else:
            raise AnthropicRequestError(f"{where}.role: must be 'user' or 'assistant'")
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": messages,
        "max_tokens": body["max_tokens"],
    }
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), int | float) and not isinstance(body.get(key), bool):
            out[key] = body[key]
    stops = body.get("stop_sequences")
    if stops is not None:
        _need(
            isinstance(stops, list) and all(isinstance(x, str) for x in stops),
            "stop_sequences: must be a list of strings",
        )
        if stops:
            out["stop"] = stops[:4]  # OpenAI servers take at most four
    schema = _output_schema(body.get("output_config"))
    if schema is not None:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema},
        }
    tools = _tools(body["tools"]) if body.get("tools") else []
    if tools:
        out["tools"] = tools
        if body.get("tool_choice") is not None:
            out["tool_choice"], parallel = _tool_choice(body["tool_choice"])
            if parallel is not None:
                out["parallel_tool_calls"] = parallel
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# --------------------------------------------------------------------------- replies


def _list(value: Any) -> list[Any]:
    """A backend's list field, or nothing: malformed replies are skipped, never a crash."""
    return value if isinstance(value, list) else []


def _arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments as an object; a weak model's broken JSON is repaired."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = json_repair.loads(raw)
    return value if isinstance(value, dict) else {"value": value}


def _usage(usage: Any) -> dict[str, int]:
    u = usage if isinstance(usage, dict) else {}
    count = lambda v: v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0  # noqa: E731
    return {
        "input_tokens": count(u.get("prompt_tokens")),
        "output_tokens": count(u.get("completion_tokens")),
    }


def message_from_openai(data: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic ``message`` object for an OpenAI chat completion."""
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    msg = choice.get("message") if isinstance(choice, dict) else None
    msg = msg if isinstance(msg, dict) else {}
    content: list[dict[str, Any]] = []
    if isinstance(msg.get("content"), str) and msg["content"]:
        content.append({"type": "text", "text": msg["content"]})
    for call in _list(msg.get("tool_calls")):
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            content.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"),
                    "name": str(fn["name"]),
                    "input": _arguments(fn.get("arguments")),
                }
            )
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    stop = "tool_use" if any(c["type"] == "tool_use" for c in content) else None
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop or _STOP_REASONS.get(str(finish), "end_turn"),
        "stop_sequence": None,
        "usage": _usage(data.get("usage")),
    }


# --------------------------------------------------------------------------- streams


@dataclass
class StreamTranslator:
    """OpenAI stream chunks in, Anthropic stream events out (``feed`` then ``finish``)."""

    model: str
    message_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex[:24]}")
    _index: int = -1  # the open content block, -1 when none
    _open: str | None = None  # "text" or the OpenAI index of the open tool call
    _started: bool = False
    _finish: str | None = None
    _used_tools: bool = False
    _usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})

    def start(self) -> bytes:
        self._started = True
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": dict(self._usage),
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def feed(self, payload: bytes) -> bytes:
        """The Anthropic events for one OpenAI chunk (often none; malformed ones are skipped)."""
        try:
            chunk = json.loads(payload)
        except ValueError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if isinstance(chunk.get("usage"), dict):
            self._usage = _usage(chunk["usage"])
        out = []
        for choice in _list(chunk.get("choices")):
            if not isinstance(choice, dict):
                continue
            self._finish = choice.get("finish_reason") or self._finish
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                out.append(self._text(delta["content"]))
            for call in _list(delta.get("tool_calls")):
                if isinstance(call, dict):
                    out.append(self._tool(call))
        return b"".join(out)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        closed = self._close()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return closed + sse_event("content_block_start", start)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        body = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return sse_event("content_block_delta", body)

    def _text(self, text: str) -> bytes:
        head = b"" if self._open == "text" else self._begin("text", {"type": "text", "text": ""})
        return head + self._delta({"type": "text_delta", "text": text})

    def _tool(self, call: dict[str, Any]) -> bytes:
        key = f"tool:{call.get('index', 0)}"
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        head = b""
        if self._open != key:
            self._used_tools = True
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"),
                "name": str(fn.get("name") or ""),
                "input": {},
            }
            head = self._begin(key, block)
        args = fn.get("arguments")
        if isinstance(args, dict):
            args = json.dumps(args)
        if not isinstance(args, str) or not args:
            return head
        return head + self._delta({"type": "input_json_delta", "partial_json": args})

    def finish(self) -> bytes:
        """Close the open block and end the message (after the upstream's last chunk)."""
        stop = "tool_use" if self._used_tools else _STOP_REASONS.get(str(self._finish))
        delta = {"stop_reason": stop or "end_turn", "stop_sequence": None}
        usage = {"output_tokens": self._usage["output_tokens"]}
        return (
            self._close()
            + sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
            + sse_event("message_stop", {"type": "message_stop"})
        )

    def fail(self, message: str) -> bytes:
        """A stream that broke after bytes went out ends with an ``error`` event."""
        return self._close() + sse_event("error", error_body(502, message))

    @property
    def usage(self) -> dict[str, int]:
        return self._usage
