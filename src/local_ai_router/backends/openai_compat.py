"""One adapter for every OpenAI-compatible server, with pooled connections.

Quirks come from the backend's :class:`~.profiles.Profile`; failures become the
``BackendError`` family so the router can tell "try the next backend" (no
connection, timeout, 5xx before the first byte) from "the request is wrong".

Chat calls to a plain ``http://`` server (the local model servers this project is for)
go over a small HTTP/1.1 client on asyncio + httptools (:mod:`.http1`): about a
sixth of httpx2's CPU per call. Everything else uses httpx2: ``https://``, proxies from
the environment, models/health/discovery calls, and an injected transport (unit tests
pass ``httpx2.MockTransport``). Both raise httpx2's exception types, handled alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from .http1 import FastPool, HttpxReply, Reply
from .profiles import Profile, profile_for, synthesize_stream

__all__ = [
    "OpenAICompatBackend",
    "RawJSON",
    "UpstreamStream",
    "http_client",
    "http_error",
    "is_context_error",
    "loads_object",
    "parse_chat_response",
    "unavailable",
]

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


def http_error(backend: str, status: int, text: str) -> BackendHTTPError:
    """The error for a backend's HTTP error answer (a context overflow gets its own class)."""
    message = f"backend {backend} answered HTTP {status}: {_error_message(text)}"
    cls = ContextLengthError if is_context_error(status, text) else BackendHTTPError
    return cls(message, status=status, body=text, backend=backend)


def unavailable(backend: str, exc: Exception) -> BackendUnavailable:
    kind = "timed out" if isinstance(exc, httpx2.TimeoutException) else "is unreachable"
    detail = str(exc) or type(exc).__name__
    return BackendUnavailable(f"backend {backend} {kind}: {detail}", backend=backend)


def http_client(
    config: BackendConfig, headers: dict[str, str], transport: httpx2.AsyncBaseTransport | None
) -> httpx2.AsyncClient:
    """A pooled client sized for the backend's ``max_concurrent``, with its timeouts."""
    pool = max(config.max_concurrent * 2, 8)
    return httpx2.AsyncClient(
        transport=transport,
        headers=headers,
        timeout=httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s),
        limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool),
    )


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


class RawJSON(dict[str, Any]):
    """A parsed JSON object that keeps the exact bytes it was parsed from.

    The gateway forwards a request (and returns a reply) byte for byte when nothing in it
    has to change, instead of re-serializing it, which costs more than the parse on large
    bodies. Setting or removing a key forgets the bytes; code that changes a body builds a
    changed copy (a plain dict), as the gateway and the profiles do.
    """

    __slots__ = ("raw",)

    def __init__(self, data: dict[str, Any], raw: bytes | None) -> None:
        super().__init__(data)
        self.raw = raw

    def __setitem__(self, key: str, value: Any) -> None:
        self.raw = None
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.raw = None
        super().__delitem__(key)

    def pop(self, *args: Any) -> Any:
        self.raw = None
        return super().pop(*args)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.raw = None
        super().update(*args, **kwargs)


def loads_object(raw: bytes) -> Any:
    """``json.loads``; a JSON object comes back as a :class:`RawJSON` holding ``raw``."""
    try:
        data = json.loads(raw.decode())  # UTF-8 without a BOM, nearly always: no sniffing
    except ValueError:
        data = json.loads(raw)  # a BOM, UTF-16/32, or not JSON (and then its own message)
    return RawJSON(data, raw) if type(data) is dict else data


def _with_stream_flag(raw: bytes, stream: bool) -> bytes | None:
    """``raw`` (an object without a "stream" key) with one added, or None if it is odd."""
    start = len(raw) - len(raw.lstrip())
    if raw[start : start + 1] != b"{":
        return None  # a BOM or a UTF-16 body: re-encode instead
    head = b'{"stream":true' if stream else b'{"stream":false'
    rest = raw[start + 1 :]
    return head + (rest if rest.lstrip()[:1] == b"}" else b"," + rest)


class UpstreamStream:
    """An open streamed response: status already checked, bytes not yet read."""

    def __init__(self, reply: Reply | None, backend: str, synthetic: list[bytes] | None = None):
        self._reply = reply
        self._synthetic = synthetic
        self.backend = backend

    async def events(self) -> AsyncIterator[bytes]:
        """Yield each SSE ``data:`` payload (without the prefix), ``[DONE]`` excluded."""
        if self._synthetic is not None:
            for item in self._synthetic:
                yield item
            return
        assert self._reply is not None
        chunks = self._reply.chunks()
        buf = b""
        async for chunk in chunks:
            buf = buf + chunk if buf else chunk
            if b"\n" not in chunk and b"\r" not in chunk:
                continue
            if b"\r" in buf:  # SSE lines may end in CRLF or a lone CR too
                buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    await self._drain(chunks)
                    return
                if payload:
                    yield payload
        payload = buf[5:].strip() if buf.startswith(b"data:") else b""
        if payload and payload != b"[DONE]":
            yield payload

    @staticmethod
    async def _drain(chunks: AsyncIterator[bytes]) -> None:
        """Read to the end of the body so the pooled connection can be reused; closing a
        response with unread bytes drops the connection (a new TCP handshake per stream)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(0.5):
                async for _ in chunks:
                    pass

    async def aclose(self) -> None:
        if self._reply is not None:
            await self._reply.aclose()


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
        self._client = http_client(config, headers, transport)

        self._headers = headers
        self._fast: FastPool | None = None
        self._transport = transport
        self.set_base_url(self.base_url)

    def set_base_url(self, url: str) -> None:
        """For backends whose address is known only at start (the embedded server)."""
        self.base_url = url.rstrip("/")
        if self._fast is not None:
            self._fast.close_idle()
        self._fast = (
            FastPool(self.base_url, "/chat/completions", self._headers, self.config)
            if FastPool.applies(self.base_url, self._transport)
            else None
        )

    # ------------------------------------------------------------------ calls

    def _encode(self, body: dict[str, Any]) -> bytes:
        return json.dumps(
            self.profile.prepare(body), separators=(",", ":"), ensure_ascii=False
        ).encode()

    def _wire_body(self, body: dict[str, Any], stream: bool) -> bytes:
        """The bytes to send: the caller's own when nothing but the stream flag is missing."""
        raw = body.raw if type(body) is RawJSON else None
        if (
            raw is not None
            and (stream or "stream_options" not in body)
            and (not self.profile.fixes or self.profile.prepare(body) == body)
        ):
            if body.get("stream") is stream:
                return raw
            if "stream" not in body and (spliced := _with_stream_flag(raw, stream)):
                return spliced
        payload = dict(body, stream=stream)
        if not stream:
            payload.pop("stream_options", None)
        return self._encode(payload)

    def _raise_for(self, status: int, text: str) -> None:
        raise http_error(self.name, status, text)

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        return unavailable(self.name, exc)

    async def _post(self, payload: bytes) -> Reply:
        """POST /chat/completions; the reply once its head has arrived."""
        try:
            if self._fast is not None:
                return await self._fast.request(payload)
            request = self._client.build_request(
                "POST", f"{self.base_url}/chat/completions", content=payload
            )
            return HttpxReply(await self._client.send(request, stream=True))
        except httpx2.RequestError as exc:
            raise self._unavailable(exc) from None

    async def _read(self, reply: Reply) -> bytes:
        try:
            return await reply.read()
        except httpx2.RequestError as exc:
            raise self._unavailable(exc) from None
        finally:
            await reply.aclose()

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed completion as raw JSON (a :class:`RawJSON` holding the reply's bytes)."""
        reply = await self._post(self._wire_body(body, False))
        raw = await self._read(reply)
        if reply.status >= 400:
            self._raise_for(reply.status, raw.decode("utf-8", "replace"))
        try:
            data = loads_object(raw)
        except ValueError:
            text = raw.decode("utf-8", "replace")
            raise BackendProtocolError(
                f"backend {self.name} returned invalid JSON: {text[:200]!r}", backend=self.name
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
        reply = await self._post(self._wire_body(body, True))
        if reply.status >= 400 or reply.content_type.startswith("application/json"):
            text = (await self._read(reply)).decode("utf-8", "replace")
            if reply.status >= 400:
                self._raise_for(reply.status, text)
            # A server that ignores stream=true answers with one JSON completion.
            return UpstreamStream(None, self.name, synthesize_stream(self._completion(text)))
        return UpstreamStream(reply, self.name)

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
        if self._fast is not None:
            self._fast.close_idle()
        await self._client.aclose()
