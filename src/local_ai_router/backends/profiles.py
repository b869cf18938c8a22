"""Per-server quirks and context-window discovery.

The adapter (``openai_compat``) speaks the wire protocol; a :class:`Profile`
says what one kind of server gets wrong and how to ask it for its real context
window. Nothing outside this module special-cases a server kind.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2

__all__ = ["PROFILES", "Profile", "profile_for", "synthesize_stream"]

StructuredOutput = Literal["json_schema", "json_object_schema", "none"]
Discover = Callable[[httpx2.AsyncClient, str, str], Awaitable[int | None]]


async def _discover_vllm(client: httpx2.AsyncClient, base_url: str, model: str) -> int | None:
    r = await client.get(f"{base_url}/models")
    r.raise_for_status()
    for entry in r.json().get("data", []):
        if entry.get("id") == model or not model:
            value = entry.get("max_model_len")
            return int(value) if value else None
    return None


def _server_root(base_url: str) -> str:
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


async def _discover_llamacpp(client: httpx2.AsyncClient, base_url: str, model: str) -> int | None:
    # llama.cpp's llama-server answers /props; llama-cpp-python's server does not,
    # but lists n_ctx nowhere either, so the configured n_ctx is used for it.
    r = await client.get(f"{_server_root(base_url)}/props")
    if r.status_code == 404:
        return await _discover_vllm(client, base_url, model)
    r.raise_for_status()
    data = r.json()
    n_ctx = data.get("n_ctx") or (data.get("default_generation_settings") or {}).get("n_ctx")
    return int(n_ctx) if n_ctx else None


async def _discover_ollama(client: httpx2.AsyncClient, base_url: str, model: str) -> int | None:
    r = await client.post(f"{_server_root(base_url)}/api/show", json={"model": model})
    r.raise_for_status()
    data = r.json()
    # An explicit num_ctx in the Modelfile is what the server really uses.
    for line in str(data.get("parameters") or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "num_ctx" and parts[1].isdigit():
            return int(parts[1])
    for key, value in (data.get("model_info") or {}).items():
        if key.endswith(".context_length") and value:
            return int(value)
    return None


async def _discover_none(client: httpx2.AsyncClient, base_url: str, model: str) -> int | None:
    return None


def _fix_null_content(body: dict[str, Any]) -> None:
    """llama.cpp answers HTTP 500 to an assistant message with content null plus tool_calls."""
    for msg in body.get("messages") or ():
        if isinstance(msg, dict) and msg.get("role") == "assistant" and msg.get("content") is None:
            msg["content"] = ""


def _json_object_schema(body: dict[str, Any]) -> None:
    """llama-cpp-python takes {"type": "json_object", "schema": S}; json_schema gets HTTP 500."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        body["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}


@dataclass(frozen=True)
class Profile:
    """What one kind of server needs."""

    kind: str
    health_path: str = "/models"
    structured_output: StructuredOutput = "json_schema"
    # Tool-calling mode when the backend says ``auto``.
    default_tool_mode: Literal["native", "text", "constrained"] = "native"
    # Servers that return an empty body when streaming with tools + tool_choice auto.
    stream_with_tools_broken: bool = False
    discover: Discover = _discover_none
    fixes: tuple[Callable[[dict[str, Any]], None], ...] = field(default=())

    def prepare(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply this server's fixes to an outgoing chat body (mutates a shallow copy)."""
        if not self.fixes:
            return body
        out = dict(body)
        if "messages" in out:
            out["messages"] = [dict(m) if isinstance(m, dict) else m for m in out["messages"]]
        for fix in self.fixes:
            fix(out)
        return out

    def should_stream_upstream(self, body: dict[str, Any]) -> bool:
        """False when streaming this request would come back empty (stream it ourselves)."""
        if not self.stream_with_tools_broken:
            return True
        return not (body.get("tools") and body.get("tool_choice", "auto") == "auto")


PROFILES: dict[str, Profile] = {
    "openai": Profile(kind="openai"),
    "vllm": Profile(kind="vllm", discover=_discover_vllm, default_tool_mode="native"),
    "llamacpp": Profile(
        kind="llamacpp",
        structured_output="json_object_schema",
        default_tool_mode="constrained",
        stream_with_tools_broken=True,
        discover=_discover_llamacpp,
        fixes=(_fix_null_content, _json_object_schema),
    ),
    "embedded": Profile(
        kind="embedded",
        structured_output="json_object_schema",
        default_tool_mode="constrained",
        stream_with_tools_broken=True,
        discover=_discover_llamacpp,
        fixes=(_fix_null_content, _json_object_schema),
    ),
    # Ollama's /v1 cannot set num_ctx per request; its tool support depends on the model.
    "ollama": Profile(kind="ollama", discover=_discover_ollama, structured_output="json_schema"),
    "anthropic": Profile(kind="anthropic", structured_output="none"),
}


def synthesize_stream(data: dict[str, Any]) -> list[bytes]:
    """Turn a non-streamed completion into the chunks a stream would have carried (for
    servers whose own stream is broken for the request, and those that ignore stream)."""
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


def profile_for(kind: str) -> Profile:
    return PROFILES.get(kind, PROFILES["openai"])
