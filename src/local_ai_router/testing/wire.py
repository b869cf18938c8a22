"""OpenAI wire format for the scripted server: JSON bodies, errors, SSE pieces, playback.

Internal module of :mod:`local_ai_router.testing`.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .script import Reply, tokens_estimate

if TYPE_CHECKING:
    from .server import ScriptedBackend

__all__ = [
    "JSON_HEADERS",
    "SSE_HEADERS",
    "Playback",
    "check_chat_body",
    "compute_usage",
    "dumps",
    "error",
    "error_type",
    "finish",
    "new_id",
    "ok",
    "pieces",
]

_WORD = re.compile(r"\S+\s*|\s+")
_MAX_DELTAS = 64  # long texts are grouped so a stream never has thousands of chunks
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def error_type(status: int) -> str:
    named = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }
    return named.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error(status: int, message: str, type_: str | None = None) -> Response:
    """OpenAI's error shape: ``{"error": {"message", "type", "code"}}``."""
    body = {"error": {"message": message, "type": type_ or error_type(status), "code": status}}
    return Response(dumps(body), status_code=status, media_type="application/json")


def ok(obj: Any) -> Response:
    return Response(dumps(obj), media_type="application/json")


def pieces(text: str, min_size: int = 1) -> list[str]:
    """Split text into word-sized pieces (at most _MAX_DELTAS) that join back to ``text``."""
    if min_size > 1:  # fixed-size fragments, like streamed tool arguments
        size = max(min_size, -(-len(text) // 16))
        return [text[i : i + size] for i in range(0, len(text), size)]
    words = _WORD.findall(text)
    if len(words) > _MAX_DELTAS:
        size = -(-len(words) // _MAX_DELTAS)
        words = ["".join(words[i : i + size]) for i in range(0, len(words), size)]
    return words


def check_chat_body(body: Any) -> str | None:
    """A clear 400 message for a request no OpenAI server would accept, else None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a list of message objects"
    if not all(isinstance(m.get("role"), str) for m in messages):
        return "every message needs a string 'role'"
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"'{key}' must be an integer"
    return None


class Playback:
    """ASGI response that plays precomputed chunks with the reply's timing.

    While it waits (delay / chunk_delay) a watcher reads ``receive()``: a disconnect before
    the last chunk cancels the playback and counts in ``backend.cancelled``. Without any
    waiting the whole body is written at once, so there is nothing to watch.
    """

    __slots__ = ("_finished", "_gone", "backend", "chunks", "headers", "reply", "status")

    def __init__(
        self,
        backend: ScriptedBackend,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunks: list[bytes],
        reply: Reply,
    ) -> None:
        self.backend, self.status, self.headers = backend, status, headers
        self.chunks, self.reply = chunks, reply
        self._finished = self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        backend = self.backend
        backend.active += 1
        backend.max_active = max(backend.max_active, backend.active)
        try:
            if not (self.reply.delay or self.reply.chunk_delay):
                await self._play(send)
            else:
                await self._play_watched(receive, send)
        finally:
            backend.active -= 1

    async def _play_watched(self, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, task))
        try:
            await self._play(send)
        except asyncio.CancelledError:
            if not self._gone or task.uncancel() > 0:
                raise  # cancelled by someone else (server shutdown), not by our watcher
            if not self.backend._stopping:
                self.backend.cancelled += 1
        finally:
            watcher.cancel()

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._finished:
            self._gone = True
            task.cancel()

    async def _play(self, send: Send) -> None:
        reply, chunks = self.reply, self.chunks
        if not reply.chunk_delay and reply.fail_after_chunks is None:
            chunks = [b"".join(chunks)]  # same bytes, one write: syscalls dominate the cost
        if reply.delay:
            await asyncio.sleep(reply.delay)
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        last = len(chunks) - 1
        for i, chunk in enumerate(chunks):
            if reply.fail_after_chunks is not None and i >= reply.fail_after_chunks:
                return  # leave the response incomplete: uvicorn closes the connection
            if i and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            self._finished = i == last  # set before sending: a disconnect now is not a cancel
            await send({"type": "http.response.body", "body": chunk, "more_body": i != last})
        if not chunks:
            self._finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def finish(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def compute_usage(reply: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
    """Computed usage (prompt = tokens_estimate) with ``reply.usage`` merged over it."""
    chars = len(reply.content or "")
    for call in reply.tool_calls or ():
        fn = call.get("function")
        args = fn.get("arguments") if isinstance(fn, Mapping) else None
        chars += len(args) if isinstance(args, str) else 0
    prompt, completion = tokens_estimate(body), -(-chars // 4)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage.update(reply.usage or {})
    if not reply.usage or "total_tokens" not in reply.usage:
        usage["total_tokens"] = (usage.get("prompt_tokens") or 0) + (
            usage.get("completion_tokens") or 0
        )
    return usage
