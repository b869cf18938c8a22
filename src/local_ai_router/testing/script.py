"""What a :class:`~local_ai_router.testing.ScriptedBackend` script holds, and how it counts.

Internal module: import these names from :mod:`local_ai_router.testing`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = [
    "KNOWN_QUIRKS",
    "Reply",
    "ScriptItem",
    "check_item",
    "tokens_estimate",
    "tool_call",
]

#: Server quirks ``ScriptedBackend(quirks=...)`` can emulate (each seen on a real server).
KNOWN_QUIRKS = frozenset(
    {
        # llama-cpp-python: an assistant message with content null + tool_calls -> HTTP 500.
        "llamacpp_null_content_500",
        # llama-cpp-python: stream=true with tool_choice "auto" -> HTTP 200 with an empty body.
        "llamacpp_stream_tool_choice_empty",
        # llama-cpp-python: stream_options.include_usage is ignored (no usage chunk).
        "llamacpp_no_stream_usage",
        # old vLLM: an over-long prompt -> HTTP 200 with empty choices instead of the 400.
        "vllm_overflow_empty_choices",
    }
)


@dataclass(slots=True)
class Reply:
    """One scripted answer. Only set what the test cares about.

    ``status`` >= 400 answers with an OpenAI error body (``error_message`` or a default);
    ``raw_body`` is sent verbatim instead of anything generated (for streams it is split at
    blank lines into chunks, so ``chunk_delay`` / ``fail_after_chunks`` still apply).
    ``fail_after_chunks=N`` drops the connection after N body chunks (SSE events when
    streaming; a non-streaming body counts as two halves, so 0 = headers only, 1 = half a body).
    ``usage`` is merged over the computed usage. ``delay`` is waited before the first byte,
    ``chunk_delay`` between chunks.
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    status: int = 200
    error_message: str | None = None
    raw_body: str | bytes | None = None
    fail_after_chunks: int | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        if self.content is not None and not isinstance(self.content, str):
            raise TypeError(f"Reply.content must be str or None, got {type(self.content).__name__}")
        if self.tool_calls is not None:
            if not isinstance(self.tool_calls, list | tuple) or not all(
                isinstance(tc, Mapping) for tc in self.tool_calls
            ):
                raise TypeError("Reply.tool_calls must be a list of dicts (see tool_call())")
            self.tool_calls = [dict(tc) for tc in self.tool_calls]
        if self.delay < 0 or self.chunk_delay < 0:
            raise ValueError("Reply.delay and Reply.chunk_delay must be >= 0")
        if not isinstance(self.status, int) or not 200 <= self.status <= 599:
            raise ValueError(f"Reply.status must be an HTTP status 200-599, got {self.status!r}")
        if self.error_message is not None and self.status < 400:
            raise ValueError("Reply.error_message needs an error status (>= 400)")
        if self.fail_after_chunks is not None and self.fail_after_chunks < 0:
            raise ValueError("Reply.fail_after_chunks must be >= 0")
        if self.raw_body is not None and not isinstance(self.raw_body, str | bytes):
            raise TypeError("Reply.raw_body must be str or bytes")


#: What a script holds: a Reply, a plain string (= ``Reply(content=...)``), or a callable that
#: gets the request body (dict) and returns a Reply or str, possibly as an awaitable.
ScriptItem: TypeAlias = (
    Reply | str | Callable[[dict[str, Any]], "Reply | str | Awaitable[Reply | str]"]
)


def tool_call(name: str, args: Mapping[str, Any] | str, id: str | None = None) -> dict[str, Any]:
    """An OpenAI tool call dict; ``args`` as a dict is JSON-encoded, a str is kept verbatim."""
    arguments = args if isinstance(args, str) else json.dumps(args)
    return {
        "id": id or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def tokens_estimate(body: Mapping[str, Any]) -> int:
    """Prompt tokens as the scripted server counts them: ceil(chars / 4).

    chars = length of every message's text content (a str, or the ``text`` of content parts)
    + length of every ``tool_calls[].function.arguments`` string + ``len(json.dumps(tools))``
    when the request has tools. Deterministic, so tests can compute limits exactly.
    """
    chars = 0
    messages = body.get("messages")
    for msg in messages if isinstance(messages, list) else ():
        if not isinstance(msg, Mapping):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(
                len(p["text"])
                for p in content
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            )
        calls = msg.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") if isinstance(call, Mapping) else None
            args = fn.get("arguments") if isinstance(fn, Mapping) else None
            chars += len(args) if isinstance(args, str) else 0
    if body.get("tools"):
        chars += len(json.dumps(body["tools"]))
    return -(-chars // 4)


def check_item(item: object) -> None:
    if not isinstance(item, Reply | str) and not callable(item):
        raise TypeError(
            f"script items must be Reply, str or a callable(body) -> Reply | str; "
            f"got {type(item).__name__}"
        )
