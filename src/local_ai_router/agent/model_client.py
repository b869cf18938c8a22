"""The agent's model calls, through the gateway: routing, fallback and accounting included.

``stream`` reads the reply as it is generated (``model_delta`` events) and
reassembles it, tool calls included, into the same :class:`ChatResult` as
``complete``. Servers that ignore ``stream_options.include_usage`` (llama.cpp's
Python server) send no usage chunk; the run's usage is then estimated (prompt
characters / 4, one token per streamed piece) rather than reported as zero.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..backends.profiles import profile_for
from ..gateway.routing import estimate_tokens
from ..gateway.service import Gateway
from ..types import BackendUnavailable, ChatResult, ToolCall, Usage
from .seams import ModelInfo

__all__ = ["GatewayModelClient", "StreamAssembler"]


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class StreamAssembler:
    """Builds one reply from OpenAI stream chunks (content, tool calls by index, usage)."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    usage_reported: bool = False
    pieces: int = 0  # deltas that carried text: about one token each on llama.cpp and vLLM

    def feed(self, payload: bytes, on_text: Callable[[str], None] | None = None) -> None:
        try:
            chunk = json.loads(payload)
        except ValueError:
            return  # a malformed chunk is skipped, not fatal
        if not isinstance(chunk, dict):
            return
        if isinstance(chunk.get("error"), dict):
            raise BackendUnavailable(f"stream failed: {chunk['error'].get('message')}")
        self.model = chunk.get("model") or self.model
        if isinstance(chunk.get("usage"), dict):
            self.usage = Usage.from_openai(chunk["usage"])
            self.usage_reported = True
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._choice(choice, on_text)

    def _choice(self, choice: dict[str, Any], on_text: Callable[[str], None] | None) -> None:
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            return
        piece = delta.get("content")
        if isinstance(piece, str) and piece:
            self.pieces += 1
            self.text.append(piece)
            if on_text:
                on_text(piece)
        for raw in delta.get("tool_calls") or ():
            if not isinstance(raw, dict):
                continue
            index = raw.get("index", len(self.calls))
            call = self.calls.setdefault(index if isinstance(index, int) else 0, _PartialCall())
            call.id = call.id or str(raw.get("id") or "")
            fn = raw.get("function") or {}
            if isinstance(fn, dict):
                call.name += str(fn.get("name") or "")
                args = fn.get("arguments")
                self.pieces += bool(args)
                call.arguments += (
                    args if isinstance(args, str) else (json.dumps(args) if args else "")
                )

    def result(self) -> ChatResult:
        calls = [
            ToolCall(id=c.id or f"call_{uuid.uuid4().hex[:12]}", name=c.name, arguments=c.arguments)
            for _, c in sorted(self.calls.items())
            if c.name
        ]
        text = "".join(self.text)
        return ChatResult(
            content=text or None,
            tool_calls=calls,
            usage=self.usage,
            model=self.model,
            finish_reason=self.finish_reason,
        )


class GatewayModelClient:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def resolve(self, model: str) -> ModelInfo:
        route = self.gateway.router.route({"model": model, "messages": []}, {})
        usable = [
            (s, m) for s, m in route.candidates if s.healthy and not s.drained
        ] or route.candidates
        if not usable:
            return ModelInfo(model=model)
        st, name = usable[0]
        mode = st.backend.config.tool_mode
        if mode == "auto":
            mode = profile_for(st.backend.config.kind).default_tool_mode
        return ModelInfo(
            model=name or model, backend=st.name, tool_mode=mode, context_window=st.window_for(name)
        )

    async def complete(self, body: dict[str, Any]) -> ChatResult:
        result, _ = await self.gateway.complete(body)
        return result

    async def stream(self, body: dict[str, Any], on_text: Callable[[str], None]) -> ChatResult:
        """Like :meth:`complete`, but tokens reach ``on_text`` as they are generated."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        session = await self.gateway.open_stream(body, {})
        out = StreamAssembler()
        try:
            payload = session.first
            while True:
                if payload:
                    out.feed(payload, on_text)
                try:
                    payload = await session.events.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise BackendUnavailable(f"the model's stream broke off: {exc}") from None
        finally:
            await self.gateway.close_stream(session)
        result = out.result()
        self.gateway.account(  # metrics count only what the backend reported
            session.attempt,
            "agent",
            200,
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            0.0,
            stream=True,
        )
        if not out.usage_reported:
            result.usage = Usage(prompt_tokens=estimate_tokens(body), completion_tokens=out.pieces)
        return result
