"""``kind: anthropic``: a backend that speaks the Anthropic Messages API (hybrid mode).

The gateway and the agent work in OpenAI's chat format; this adapter translates each
request to ``POST {url}/v1/messages`` and each reply (or stream of events) back, so a
cloud Claude model can sit behind the same aliases and fallbacks as the local servers
(for example as the ``big`` fallback when the GPU box is busy). The key comes from
``api_key_env`` and is sent as ``x-api-key``.

The reverse direction (Anthropic clients in front of local models) is
``gateway/anthropic_wire.py``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from ..config import BackendConfig
from ..types import BackendProtocolError, BackendUnavailable, ChatResult
from .openai_compat import http_client, http_error, parse_chat_response, unavailable
from .profiles import Profile, profile_for

__all__ = ["ANTHROPIC_VERSION", "AnthropicBackend", "anthropic_request", "openai_completion"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often omit it
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------- requests


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    return index if isinstance(index, int) else 0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and "text" in p
        )
    return "" if content is None else str(content)


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"type": "text", "text": _text(content)}]
    blocks = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                blocks.append(_image(url))
        elif "text" in part:
            blocks.append({"type": "text", "text": str(part.get("text") or "")})
    return blocks


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"value": value}


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text(msg.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in _list(msg.get("tool_calls")):
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"),
                    "name": str(fn["name"]),
                    "input": _arguments(fn.get("arguments")),
                }
            )
    return blocks


def _turns(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts and the alternating user/assistant turns (adjacent same-role merged)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text(msg.get("content")))
            continue
        if role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": str(msg.get("tool_call_id") or ""),
                "content": _text(msg.get("content")),
            }
            role, blocks = "user", [result]
        elif role == "assistant":
            blocks = _assistant_blocks(msg)
        else:
            role, blocks = "user", _user_blocks(msg.get("content"))
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    if choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": str(choice["function"].get("name") or "")}
    if parallel is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def anthropic_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat body."""
    system, turns = _turns(_list(body.get("messages")))
    out: dict[str, Any] = {
        "model": body.get("model"),
        "max_tokens": body.get("max_tokens")
        or body.get("max_completion_tokens")
        or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if any(system):
        out["system"] = "\n\n".join(s for s in system if s)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = [
        t["function"]
        for t in _list(body.get("tools"))
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if tools:
        out["tools"] = [
            {
                "name": fn.get("name"),
                "description": fn.get("description") or "",
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
            }
            for fn in tools
        ]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice:
            out["tool_choice"] = choice
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        schema = _dict(rf.get("json_schema")).get("schema")
        if isinstance(schema, dict):
            out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if body.get("stream"):
        out["stream"] = True
    return out


# --------------------------------------------------------------------------- replies


def _usage(u: Any) -> dict[str, int]:
    u = u if isinstance(u, dict) else {}
    n = lambda k: u.get(k) if isinstance(u.get(k), int) else 0  # noqa: E731
    prompt = n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": n("output_tokens"),
        "total_tokens": prompt + n("output_tokens"),
    }


def openai_completion(msg: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion for an Anthropic ``message``."""
    texts, thoughts, calls = [], [], []
    for block in _list(msg.get("content")):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "thinking":
            thoughts.append(str(block.get("thinking") or ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name") or ""),
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "\n".join(thoughts)
    return {
        "id": str(msg.get("id") or f"chatcmpl-{uuid.uuid4().hex[:24]}"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(msg.get("model") or ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _FINISH.get(str(msg.get("stop_reason")), "stop"),
            }
        ],
        "usage": _usage(msg.get("usage")),
    }


# --------------------------------------------------------------------------- streams


class AnthropicStream:
    """An open Messages stream, read as OpenAI chunk payloads (as ``UpstreamStream`` yields)."""

    def __init__(self, response: httpx2.Response, backend: str):
        self._response = response
        self.backend = backend
        self._id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._model = ""
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._finish: str | None = None
        self._usage: dict[str, Any] = {}

    async def events(self) -> AsyncIterator[bytes]:
        try:
            async for line in self._response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # "event:" lines repeat the type that the data carries
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    continue
                if isinstance(event, dict):
                    for chunk in self._translate(event):
                        yield json.dumps(chunk, separators=(",", ":")).encode()
        except httpx2.RequestError as exc:
            raise BackendUnavailable(
                f"backend {self.backend} stream broke: {exc}", backend=self.backend
            ) from None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _translate(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            msg = event.get("message") if isinstance(event.get("message"), dict) else {}
            self._id = str(msg.get("id") or self._id)
            self._model = str(msg.get("model") or "")
            self._usage = dict(_dict(msg.get("usage")))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            self._finish = _dict(event.get("delta")).get("stop_reason") or self._finish
            self._usage.update(_dict(event.get("usage")))
            return []
        if kind == "message_stop":
            finish = _FINISH.get(str(self._finish), "stop")
            usage = {"id": self._id, "object": "chat.completion.chunk", "created": int(time.time())}
            usage |= {"model": self._model, "choices": [], "usage": _usage(self._usage)}
            return [self._chunk({}, finish), usage]
        if kind == "error":
            err = event.get("error") if isinstance(event.get("error"), dict) else {}
            raise BackendUnavailable(
                f"backend {self.backend} stream failed: {err.get('message') or event}",
                backend=self.backend,
            )
        return []  # ping, and event types added later

    def _block_start(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block") if isinstance(event.get("content_block"), dict) else {}
        if block.get("type") == "tool_use":
            index = len(self._tools)
            self._tools[_index(event)] = index
            call = {"index": index, "id": str(block.get("id") or ""), "type": "function"}
            call["function"] = {"name": str(block.get("name") or ""), "arguments": ""}
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": str(block["text"])})]
        return []

    def _block_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": str(delta.get("text") or "")})]
        if kind == "input_json_delta":
            index = self._tools.get(_index(event), 0)
            fn = {"arguments": str(delta.get("partial_json") or "")}
            return [self._chunk({"tool_calls": [{"index": index, "function": fn}]})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": str(delta.get("thinking") or "")})]
        return []

    async def aclose(self) -> None:
        await self._response.aclose()


# --------------------------------------------------------------------------- backend


class AnthropicBackend:
    """A backend reached over the Anthropic Messages API (``kind: anthropic``)."""

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
        url = (base_url or config.url or "").rstrip("/")
        self.base_url = url.removesuffix("/v1")  # accept either form of the address
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        key = config.api_key()
        if key:
            headers["x-api-key"] = key
        self._client = http_client(config, headers, transport)

    def _raise_for(self, status: int, text: str) -> None:
        raise http_error(self.name, status, text)

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        return unavailable(self.name, exc)

    async def _post(self, body: dict[str, Any], stream: bool) -> httpx2.Response:
        payload = anthropic_request({**body, "stream": stream})
        request = self._client.build_request("POST", f"{self.base_url}/v1/messages", json=payload)
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.RequestError as exc:
            raise self._unavailable(exc) from None
        if response.status_code >= 400:
            try:
                text = (await response.aread()).decode("utf-8", "replace")
            finally:
                await response.aclose()
            self._raise_for(response.status_code, text)
        return response

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._post(body, stream=False)
        try:
            raw = await response.aread()
        except httpx2.RequestError as exc:
            raise self._unavailable(exc) from None
        finally:
            await response.aclose()
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or msg.get("type") != "message":
            raise BackendProtocolError(
                f"backend {self.name} did not answer with a message: {raw[:200]!r}",
                backend=self.name,
            )
        return openai_completion(msg)

    async def complete(self, body: dict[str, Any]) -> ChatResult:
        return parse_chat_response(await self.chat(body))

    async def open_stream(self, body: dict[str, Any]) -> AnthropicStream:  # type: ignore[override]
        return AnthropicStream(await self._post(body, stream=True), self.name)

    async def models(self) -> list[dict[str, Any]]:
        try:
            r = await self._client.get(f"{self.base_url}/v1/models")
        except httpx2.RequestError as exc:
            raise self._unavailable(exc) from None
        if r.status_code >= 400:
            self._raise_for(r.status_code, r.text)
        try:
            data = r.json().get("data", [])
        except (ValueError, AttributeError):
            raise BackendProtocolError(
                f"backend {self.name}: /v1/models is not JSON", backend=self.name
            ) from None
        return [m for m in data if isinstance(m, dict) and m.get("id")]

    async def health(self, timeout: float) -> bool:
        try:
            r = await self._client.get(f"{self.base_url}/v1/models", timeout=timeout)
        except httpx2.RequestError:
            return False
        return r.status_code < 500

    async def discover_context_window(self, model: str) -> int | None:
        return self.config.context_window  # the API does not say; set it in the config

    async def aclose(self) -> None:
        await self._client.aclose()
