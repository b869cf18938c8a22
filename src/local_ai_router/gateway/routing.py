"""Pick a backend for each request, hold a slot on it, fall back when it fails.

Order of decisions for one request:

1. explicit: the ``X-Backend`` header, or ``backend/model`` as the model name;
2. the model name: an alias (``auto`` chooses ``small`` or ``big`` by the
   estimated prompt size, ``X-Force-Big`` forces big), else the backends that
   serve that model;
3. filters: unhealthy, drained, and (while the availability signal says busy)
   ``availability_backends`` are skipped; the context gate skips backends whose
   window cannot hold prompt + ``max_tokens``;
4. order: ``priority`` (lower first), then load;
5. a slot: ``max_concurrent`` per backend, a bounded wait queue beyond that.

The caller then tries candidates in order; a failure before the first byte
moves on to the next (:meth:`Router.next_attempt`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..config import Settings
from ..types import (
    ContextTooLargeError,
    NoHealthyBackendError,
    QueueFullError,
    UnknownBackendError,
    UnknownModelError,
)

__all__ = ["BackendState", "Route", "Router", "estimate_tokens"]


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens as characters / 4, counting messages *and* tool schemas.

    The system this replaces counted only messages and under-estimated a
    24-tool request by 40%; tool schemas are part of the prompt.
    """
    chars = 0
    for msg in body.get("messages") or ():
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    chars += len(str(part.get("text") or ""))
        for call in msg.get("tool_calls") or ():
            if isinstance(call, dict):
                fn = call.get("function") or {}
                chars += len(str(fn.get("name") or "")) + len(str(fn.get("arguments") or ""))
        chars += 16  # role and framing tokens
    tools = body.get("tools")
    if tools:
        chars += len(json.dumps(tools, separators=(",", ":")))
    return chars // 4 + 1


@dataclass
class BackendState:
    """A backend plus what the router knows of it right now."""

    backend: Backend
    priority: int
    max_concurrent: int
    models: list[str] = field(default_factory=list)
    context_windows: dict[str, int] = field(default_factory=dict)
    healthy: bool = True
    consecutive_failures: int = 0
    last_error: str | None = None
    last_check: float | None = None
    drained: bool = False
    in_flight: int = 0

    @property
    def name(self) -> str:
        return self.backend.name

    def window_for(self, model: str) -> int | None:
        # The configured window wins: users set it when the server reports a wrong one
        # (Ollama's model max while num_ctx is smaller).
        return (
            self.backend.config.context_window
            or self.context_windows.get(model)
            or (
                next(iter(self.context_windows.values()), None)
                if len(self.context_windows) == 1
                else None
            )
        )

    def serves(self, model: str) -> bool:
        return model in self.models

    def default_model(self) -> str:
        return self.models[0] if self.models else ""

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.backend.config.kind,
            "url": self.backend.base_url,
            "healthy": self.healthy,
            "drained": self.drained,
            "in_flight": self.in_flight,
            "max_concurrent": self.max_concurrent,
            "priority": self.priority,
            "models": list(self.models),
            "context_windows": dict(self.context_windows),
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_check": self.last_check,
        }


@dataclass
class Route:
    """Where one request may go, in order, and why."""

    candidates: list[tuple[BackendState, str]]  # (backend, model name to send)
    decision: str  # explicit / alias / auto_small / auto_big / model
    requested: str
    estimated_tokens: int


class Router:
    def __init__(self, settings: Settings, backends: Sequence[Backend]):
        self.settings = settings
        self.states: dict[str, BackendState] = {}
        for b in backends:
            self.states[b.name] = BackendState(
                backend=b,
                priority=b.config.priority,
                max_concurrent=b.config.max_concurrent,
                models=list(b.config.models),
            )
        self.unavailable: set[str] = set()  # set by the availability poller
        self._waiting = 0
        self._released = asyncio.Event()

    # ------------------------------------------------------------ lookup

    def state(self, name: str) -> BackendState:
        try:
            return self.states[name]
        except KeyError:
            known = ", ".join(self.states) or "none configured"
            raise UnknownBackendError(f"unknown backend {name!r} (known: {known})") from None

    def all_models(self) -> list[tuple[str, str]]:
        """(model, backend) pairs, in priority order."""
        out = []
        for st in sorted(self.states.values(), key=lambda s: s.priority):
            out.extend((m, st.name) for m in st.models)
        return out

    def _serving(self, model: str) -> list[BackendState]:
        return [s for s in self.states.values() if s.serves(model)]

    def _pair(self, st: BackendState, model: str) -> tuple[BackendState, str]:
        return (st, model if st.serves(model) or not st.models else st.default_model())

    # ------------------------------------------------------------ routing

    def route(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> Route:
        requested = str(body.get("model") or "auto")
        est = estimate_tokens(body)
        explicit = headers.get("x-backend")
        if explicit:
            st = self.state(explicit)
            model = self._resolve_alias(requested, est, headers)[0]
            return Route([self._pair(st, model)], "explicit", requested, est)
        if "/" in requested:
            prefix, _, rest = requested.partition("/")
            if prefix in self.states:
                model = self._resolve_alias(rest, est, headers)[0] if rest else ""
                return Route([self._pair(self.states[prefix], model)], "explicit", requested, est)
        model, decision, fallback = self._resolve_alias(requested, est, headers)
        if model == "auto":
            # No small/big aliases: every backend, by priority, with its own model.
            pairs = [(s, s.default_model()) for s in self.states.values()]
            return Route(pairs, "auto", requested, est)
        primary = self._serving(model)
        if not primary and not fallback:
            raise UnknownModelError(self._unknown_model_message(requested))
        pairs = [(s, model) for s in primary]
        if fallback:
            pairs += [(s, fallback) for s in self._serving(fallback) if s not in primary]
        if not pairs:
            raise UnknownModelError(self._unknown_model_message(requested))
        return Route(pairs, decision, requested, est)

    def _resolve_alias(
        self, requested: str, est: int, headers: Mapping[str, str]
    ) -> tuple[str, str, str | None]:
        """(model, decision, fallback model) for a requested name."""
        aliases = self.settings.aliases
        force_big = headers.get("x-force-big", "").lower() in ("1", "true", "yes")
        if requested == "auto" or aliases.get(requested) == "auto":
            small, big = aliases.get("small"), aliases.get("big")
            if not small and not big:
                return "auto", "auto", None
            if force_big or est >= self.settings.routing.small_token_threshold or not small:
                return (big or small or "auto"), "auto_big", small if big else None
            return small, "auto_small", big
        if requested in aliases:
            target = aliases[requested]
            if force_big and aliases.get("big"):
                target = aliases["big"]
            return target, "alias", None
        if force_big and aliases.get("big") and requested == aliases.get("small"):
            return aliases["big"], "force_big", None
        return requested, "model", None

    def _unknown_model_message(self, requested: str) -> str:
        names = sorted({m for m, _ in self.all_models()} | set(self.settings.aliases))
        available = ", ".join(names) or "none"
        return f"model {requested!r} is not served by any backend (available: {available})"

    def usable(self, route: Route, max_tokens: int | None) -> list[tuple[BackendState, str]]:
        """Candidates that are up and whose context window fits, in the order to try."""
        up = [
            (s, m)
            for s, m in route.candidates
            if s.healthy and not s.drained and s.name not in self.unavailable
        ]
        if not up:
            raise NoHealthyBackendError(self._down_message(route))
        need = route.estimated_tokens + (max_tokens or 0)
        fitting = [(s, m) for s, m in up if (s.window_for(m) or need) >= need]
        if not fitting:
            biggest = max((s.window_for(m) or 0) for s, m in up)
            raise ContextTooLargeError(
                f"this request needs about {need} tokens (prompt ~{route.estimated_tokens} + "
                f"max_tokens {max_tokens or 0}) but the largest available context window is "
                f"{biggest} tokens; shorten the conversation or lower max_tokens"
            )
        # Stable sort keeps the route's order (primary model first) within a priority.
        explicit_order = {id(s): i for i, (s, _) in enumerate(fitting)}
        fitting.sort(key=lambda p: (p[0].priority, explicit_order[id(p[0])]))
        return fitting

    def _down_message(self, route: Route) -> str:
        parts = []
        for s, _ in route.candidates:
            why = (
                "drained"
                if s.drained
                else "busy (availability signal)"
                if s.name in self.unavailable
                else f"unhealthy: {s.last_error or 'failed health checks'}"
            )
            parts.append(f"{s.name} ({why})")
        return "no healthy backend for this request: " + ("; ".join(parts) or "none configured")

    # ------------------------------------------------------------ slots and queue

    async def acquire(self, candidates: list[tuple[BackendState, str]]) -> tuple[BackendState, str]:
        """A slot on the first candidate with room; wait in the bounded queue otherwise."""
        pick = self._try_acquire(candidates)
        if pick:
            return pick
        cfg = self.settings.routing
        if self._waiting >= cfg.queue_max_depth:
            raise QueueFullError(
                f"all backends for this request are at max_concurrent and the queue is full "
                f"({cfg.queue_max_depth} waiting)",
                retry_after=max(1, int(cfg.queue_timeout_s // 10)),
            )
        self._waiting += 1
        deadline = time.monotonic() + cfg.queue_timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueFullError(
                        f"waited {cfg.queue_timeout_s:g}s in the queue without a free backend slot",
                        retry_after=5,
                    )
                self._released.clear()
                try:
                    await asyncio.wait_for(self._released.wait(), timeout=min(remaining, 1.0))
                except TimeoutError:
                    pass
                pick = self._try_acquire(
                    [(s, m) for s, m in candidates if s.healthy and not s.drained]
                )
                if pick:
                    return pick
        finally:
            self._waiting -= 1

    def _try_acquire(
        self, candidates: list[tuple[BackendState, str]]
    ) -> tuple[BackendState, str] | None:
        """The least-loaded candidate with room in the best priority tier that has any."""
        best: tuple[BackendState, str] | None = None
        for s, m in candidates:
            if s.in_flight >= s.max_concurrent:
                continue
            if best is None or (
                s.priority == best[0].priority
                and (s.in_flight / s.max_concurrent < best[0].in_flight / best[0].max_concurrent)
            ):
                best = (s, m)
        if best:
            best[0].in_flight += 1
        return best

    def release(self, state: BackendState) -> None:
        state.in_flight = max(0, state.in_flight - 1)
        self._released.set()

    @property
    def queue_depth(self) -> int:
        return self._waiting

    # ------------------------------------------------------------ health bookkeeping

    def record_success(self, state: BackendState) -> None:
        state.consecutive_failures = 0
        if not state.healthy:
            state.healthy = True
            state.last_error = None

    def record_failure(self, state: BackendState, error: str, threshold: int) -> None:
        state.consecutive_failures += 1
        state.last_error = error
        if state.consecutive_failures >= threshold:
            state.healthy = False
