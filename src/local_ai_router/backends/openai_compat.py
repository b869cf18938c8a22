"""One adapter for every OpenAI-compatible server, on httpx2 with a pooled client.

Quirks come from the backend's :class:`~.profiles.Profile`; failures become the
``BackendError`` family so the router can tell "try the next backend" (no
connection, timeout, 5xx before the first byte) from "the request is wrong".
The transport is injectable: unit tests pass ``httpx2.MockTransport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from ..config import BackendConfig
from ..types import (
    BackendHTTPError,
    BackendProtocolError,
    BackendUnavailable,
    ChatResult,
    ContextLengthError,
    ToolCall,
    Usage,
)
from .profiles import Profile, profile_for

__all__ = ["OpenAICompatBackend", "UpstreamStream", "is_context_error", "parse_chat_response"]

_CONTEXT_MARKERS = (
    "maximum context length",
    "context length",
    "context_length_exceeded",
    "exceeds the available context",
    "exceed_context_size",
    "too many tokens",
    "prompt is too long",
    "requested tokens",
)


def is_context_error(status: int, text: str) -> bool:
    low = text.lower()
    return status in (400, 413, 422, 500) and any(m in low for m in _CONTEXT_MARKERS)


def _error_message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        return str(data.get("message") or err)[:500]
    return text[:500]


def parse_chat_response(data: Any) -> ChatResult:
    """Normalise a chat completion JSON into a ChatResult (never trusts its shape)."""
    if not isinstance(data, dict):
        raise BackendProtocolError("the server's reply is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise BackendProtocolError(
            "the server returned no choices (an overflowing context does this on vLLM)"
        )
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    raw_calls = msg.get("tool_calls")
    calls: list[ToolCall] = []
    for raw in raw_calls if isinstance(raw_calls, list) else ():
        if not isinstance(raw, dict):
            continue
        fn = raw.get("function") or {}
        if not isinstance(fn, dict) or not fn.get("name"):
            continue
        calls.append(
            ToolCall(
                id=str(raw.get("id") or f"call_{uuid.uuid4().hex[:12]}"),
                name=str(fn["name"]),
                arguments=fn.get("arguments"),
            )
        )
    content = msg.get("content")
    try:
        usage = Usage.from_openai(data.get("usage"))
    except (TypeError, ValueError):  # a server's odd usage must not lose the reply
        usage = Usage()
    return ChatResult(
        content=content if isinstance(content, str) else None,
        tool_calls=calls,
        usage=usage,
        model=str(data.get("model") or ""),
        finish_reason=choice.get("finish_reason"),
        reasoning=msg.get("reasoning_content") or msg.get("reasoning"),
    )


class UpstreamStream:
    """An open streamed response: status already checked, bytes not yet read."""

    def __init__(
        self, response: httpx2.Response | None, backend: str, synthetic: list[bytes] | None = None
    ):
        self._response = response
        self._synthetic = synthetic
        self.backend = backend

    async def events(self) -> AsyncIterator[bytes]:
        """Yield each SSE ``data:`` payload (without the prefix), ``[DONE]`` excluded."""
        if self._synthetic is not None:
            for item in self._synthetic:
                yield item
            return
        assert self._response is not None
        lines = self._response.aiter_lines()
        async for line in lines:
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                await self._drain(lines)
                return
            if payload:
                yield payload.encode()

    @staticmethod
    async def _drain(lines: AsyncIterator[str]) -> None:
        """Read to the end of the body so the pooled connection can be reused; closing a
        response with unread bytes drops the connection (a new TCP handshake per stream)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(0.5):
                async for _ in lines:
                    pass

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()


def synthesize_stream(data: dict[str, Any]) -> list[bytes]:
    """Turn a non-streamed completion into the chunks a stream would have carried."""
    base = {
        "id": data.get("id") or f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion.chunk",
        "created": data.get("created") or int(time.time()),
        "model": data.get("model", ""),
    }
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
    if msg.get("tool_calls"):
        delta["tool_calls"] = [
            {**tc, "index": i} for i, tc in enumerate(msg["tool_calls"]) if isinstance(tc, dict)
        ]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}],
        },
    ]
    if data.get("usage"):
        chunks.append({**base, "choices": [], "usage": data["usage"]})
    return [json.dumps(c, separators=(",", ":")).encode() for c in chunks]


def _is_json(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")


class OpenAICompatBackend:
    """A model server reachable over the OpenAI API."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        base_url: str | None = None,
    ):
        self.config = config
        self.name = config.name
        self.profile: Profile = profile_for(config.kind)
        self.base_url = (base_url or config.url).rstrip("/")
        headers = {"content-type": "application/json"}
        key = config.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._client = httpx2.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx2.Limits(
                max_connections=max(config.max_concurrent * 2, 8),
                max_keepalive_connections=max(config.max_concurrent * 2, 8),
            ),
        )

    def set_base_url(self, url: str) -> None:
        """For backends whose address is known only at start (the embedded server)."""
        self.base_url = url.rstrip("/")

    # ------------------------------------------------------------------ calls

    def _encode(self, body: dict[str, Any]) -> bytes:
        return json.dumps(
            self.profile.prepare(body), separators=(",", ":"), ensure_ascii=False
        ).encode()

    def _raise_for(self, status: int, text: str) -> None:
        message = f"backend {self.name} answered HTTP {status}: {_error_message(text)}"
        cls = ContextLengthError if is_context_error(status, text) else BackendHTTPError
        raise cls(message, status=status, body=text, backend=self.name)

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        kind = "timed out" if isinstance(exc, httpx2.TimeoutException) else "is unreachable"
        detail = str(exc) or type(exc).__name__
        return BackendUnavailable(f"backend {self.name} {kind}: {detail}", backend=self.name)

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed completion as raw JSON."""
        payload = dict(body, stream=False)
        payload.pop("stream_options", None)
        try:
            r = await self._client.post(
                f"{self.base_url}/chat/completions", content=self._encode(payload)
            )
        except httpx2.RequestError as exc:
            raise self._unavailable(exc) from None
        if r.status_code >= 400:
            self._raise_for(r.status_code, r.text)
        try:
            data = r.json()
        except ValueError:
            raise BackendProtocolError(
                f"backend {self.name} returned invalid JSON: {r.text[:200]!r}", backend=self.name
            ) from None
        if not isinstance(data, dict):
            raise BackendProtocolError(
                f"backend {self.name} returned a non-object", backend=self.name
            )
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            # vLLM answers an overflowing prompt this way; no client can use it.
            raise BackendProtocolError(
                f"backend {self.name} returned no choices (an overflowing context does this "
                "on vLLM)",
                backend=self.name,
            )
        return data

    async def complete(self, body: dict[str, Any]) -> ChatResult:
        """A non-streamed completion, normalised."""
        try:
            return parse_chat_response(await self.chat(body))
        except BackendProtocolError as exc:
            exc.backend = self.name
            raise

    async def open_stream(self, body: dict[str, Any]) -> UpstreamStream:
        """Start a streamed completion; errors before the first byte raise here."""
        if not self.profile.should_stream_upstream(body):
            return UpstreamStream(None, self.name, synthesize_stream(await self.chat(body)))
        payload = dict(body, stream=True)
        request = self._client.build_request(
            "POST", f"{self.base_url}/chat/completions", content=self._encode(payload)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.RequestError as exc:
            raise self._unavailable(exc) from None
        if response.status_code >= 400 or _is_json(response):
            try:
                raw = await response.aread()
            except httpx2.HTTPError as exc:
                raise self._unavailable(exc) from None
            finally:
                await response.aclose()
            text = raw.decode("utf-8", "replace")
            if response.status_code >= 400:
                self._raise_for(response.status_code, text)
            # A server that ignores stream=true answers with one JSON completion.
            return UpstreamStream(None, self.name, synthesize_stream(self._completion(text)))
        return UpstreamStream(response, self.name)

    def _completion(self, text: str) -> dict[str, Any]:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("choices"), list)
            or not data["choices"]
        ):
            raise BackendProtocolError(
                f"backend {self.name} answered a stream request with JSON that is not a "
                f"completion: {text[:200]!r}",
                backend=self.name,
            )
        return data

    async def models(self) -> list[dict[str, Any]]:
        try:
            r = await self._client.get(f"{self.base_url}/models")
        except httpx2.RequestError as exc:
            raise self._unavailable(exc) from None
        if r.status_code >= 400:
            self._raise_for(r.status_code, r.text)
        try:
            data = r.json().get("data", [])
        except (ValueError, AttributeError):
            raise BackendProtocolError(
                f"backend {self.name}: /models is not JSON", backend=self.name
            ) from None
        if not isinstance(data, list):
            raise BackendProtocolError(
                f"backend {self.name}: /models has no 'data' list", backend=self.name
            )
        return [m for m in data if isinstance(m, dict) and m.get("id")]

    async def health(self, timeout: float) -> bool:
        try:
            r = await self._client.get(
                f"{self.base_url}{self.profile.health_path}", timeout=timeout
            )
        except httpx2.RequestError:
            return False
        return r.status_code < 500

    async def discover_context_window(self, model: str) -> int | None:
        """The server's real window for ``model`` (config ``context_window`` wins)."""
        if self.config.context_window:
            return self.config.context_window
        try:
            return await self.profile.discover(self._client, self.base_url, model)
        except (httpx2.HTTPError, ValueError, TypeError, AttributeError):
            return None

    async def aclose(self) -> None:
        await self._client.aclose()
