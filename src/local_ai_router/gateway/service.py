"""The gateway: routing + fallback + metrics + request log around the backends.

The HTTP layer (``api.py``) and the agent both call this, so an agent run gets
the same routing, fallback and accounting as any OpenAI client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend, create_backend
from ..backends.openai_compat import UpstreamStream, parse_chat_response
from ..config import Settings
from ..store.db import Database
from ..types import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendUnavailable,
    ChatResult,
    ContextLengthError,
    ContextTooLargeError,
    NoHealthyBackendError,
    RoutingError,
)
from .health import HealthMonitor
from .metrics import Metrics
from .request_log import RequestLogWriter
from .routing import BackendState, Route, Router

__all__ = ["Attempt", "Gateway", "StreamSession"]

log = logging.getLogger(__name__)


def _retryable(exc: BackendError) -> bool:
    """Try the next candidate? Connection errors, timeouts and 5xx, never a 4xx."""
    if isinstance(exc, BackendUnavailable):
        return True
    if isinstance(exc, ContextLengthError):
        return True  # a larger backend may take it
    if isinstance(exc, BackendHTTPError):
        return exc.status >= 500 or exc.status in (408, 429)
    return True  # protocol errors: another server may answer sanely


@dataclass
class Attempt:
    """Where a request ended up, for headers, metrics and the log."""

    route: Route
    state: BackendState | None = None
    model: str = ""
    fallbacks: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class StreamSession:
    """An upstream stream that has already produced its first event."""

    attempt: Attempt
    first: bytes
    upstream: UpstreamStream
    events: AsyncIterator[bytes]


class Gateway:
    def __init__(
        self,
        settings: Settings,
        db: Database | None = None,
        *,
        backends: Sequence[Backend] | None = None,
        metrics: Metrics | None = None,
    ):
        self.settings = settings
        self.db = db
        self.backends = (
            list(backends)
            if backends is not None
            else [create_backend(b) for b in settings.backends if b.kind != "embedded"]
        )
        self.router = Router(settings, self.backends)
        self.metrics = metrics or Metrics()
        self.health = HealthMonitor(settings, self.router, on_change=self._health_changed)
        self.request_log = (
            RequestLogWriter(db) if db is not None and settings.server.request_log else None
        )

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.health.start()
        for st in self.router.states.values():
            self._health_changed(st)
        if self.request_log:
            self.request_log.start()

    async def stop(self) -> None:
        await self.health.stop()
        if self.request_log:
            await self.request_log.stop()
        for b in self.backends:
            await b.aclose()

    def add_backend(self, backend: Backend) -> BackendState:
        """Register a backend created after construction (the embedded server)."""
        self.backends.append(backend)
        st = BackendState(
            backend=backend,
            priority=backend.config.priority,
            max_concurrent=backend.config.max_concurrent,
            models=list(backend.config.models),
        )
        self.router.states[backend.name] = st
        return st

    def _health_changed(self, st: BackendState) -> None:
        self.metrics.child(self.metrics.health, st.name).set(1 if st.healthy else 0)

    # ------------------------------------------------------------ candidates

    def _plan(
        self, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[Route, list[tuple[BackendState, str]]]:
        route = self.router.route(body, headers)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        return route, self.router.usable(
            route, int(max_tokens) if isinstance(max_tokens, int) else None
        )

    def _failed(self, attempt: Attempt, st: BackendState, exc: BackendError) -> None:
        attempt.errors.append(str(exc))
        attempt.fallbacks += 1
        if isinstance(exc, BackendUnavailable) or (
            isinstance(exc, BackendHTTPError) and exc.status >= 500
        ):
            self.router.record_failure(st, str(exc), self.settings.health.failures_to_unhealthy)
            self._health_changed(st)

    def _exhausted(self, attempt: Attempt, last: BackendError | None) -> Exception:
        if isinstance(last, ContextLengthError):
            return ContextTooLargeError(
                f"every backend that could take this request rejected it as too long: {last}"
            )
        if last is not None and not _retryable(last):
            return last
        detail = "; ".join(attempt.errors) or "no candidate"
        return NoHealthyBackendError(f"all backends failed for this request: {detail}")

    async def _acquire(
        self, cands: list[tuple[BackendState, str]], attempt: Attempt
    ) -> tuple[BackendState, str]:
        st, model = await self.router.acquire(cands)
        if attempt.state is not None and attempt.state is not st:
            self.metrics.child(self.metrics.failover, attempt.state.name, st.name).inc()
        attempt.state, attempt.model = st, model
        self.metrics.child(self.metrics.active, st.name).inc()
        return st, model

    def _release(self, st: BackendState) -> None:
        self.router.release(st)
        self.metrics.child(self.metrics.active, st.name).dec()

    # ------------------------------------------------------------ calls

    async def chat(
        self, body: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], Attempt]:
        """A non-streamed completion, falling back across candidates."""
        route, cands = self._plan(body, headers)
        attempt = Attempt(route)
        self.metrics.child(self.metrics.routing, route.decision, cands[0][0].name).inc()
        last: BackendError | None = None
        remaining = list(cands)
        while remaining:
            st, model = await self._acquire(remaining, attempt)
            remaining = [(s, m) for s, m in remaining if s is not st]
            try:
                data = await st.backend.chat(_with_model(body, model))
            except BackendError as exc:
                last = exc
                self._failed(attempt, st, exc)
                if not _retryable(exc):
                    break
                continue
            finally:
                self._release(st)
            self.router.record_success(st)
            return data, attempt
        raise self._exhausted(attempt, last)

    async def open_stream(self, body: dict[str, Any], headers: Mapping[str, str]) -> StreamSession:
        """Open a stream and read its first event; failures up to there fall back.

        The slot stays held until the caller closes the session (:meth:`close_stream`).
        """
        route, cands = self._plan(body, headers)
        attempt = Attempt(route)
        self.metrics.child(self.metrics.routing, route.decision, cands[0][0].name).inc()
        last: BackendError | None = None
        remaining = list(cands)
        while remaining:
            st, model = await self._acquire(remaining, attempt)
            remaining = [(s, m) for s, m in remaining if s is not st]
            upstream: UpstreamStream | None = None
            try:
                upstream = await st.backend.open_stream(_with_model(body, model))
                events = upstream.events().__aiter__()
                first = await self._first_event(events, st)
            except BackendError as exc:
                if upstream is not None:
                    await upstream.aclose()
                self._release(st)
                last = exc
                self._failed(attempt, st, exc)
                if not _retryable(exc):
                    break
                continue
            except BaseException:
                if upstream is not None:
                    await upstream.aclose()
                self._release(st)
                raise
            self.router.record_success(st)
            return StreamSession(attempt, first, upstream, events)
        raise self._exhausted(attempt, last)

    async def _first_event(self, events: AsyncIterator[bytes], st: BackendState) -> bytes:
        try:
            return await events.__anext__()
        except StopAsyncIteration:
            # A real stream always has a first chunk; an empty one is a server quirk
            # (llama.cpp with tools, vLLM on overflow), so another backend may do better.
            raise BackendProtocolError(
                f"backend {st.name} returned an empty stream", backend=st.name
            ) from None
        except Exception as exc:
            raise BackendUnavailable(
                f"backend {st.name} dropped the stream before the first byte: {exc}",
                backend=st.name,
            ) from None

    async def close_stream(self, session: StreamSession) -> None:
        await session.upstream.aclose()
        if session.attempt.state is not None:
            self._release(session.attempt.state)

    async def complete(
        self, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> tuple[ChatResult, Attempt]:
        """For the agent: a normalised reply plus where it came from."""
        started = time.perf_counter()
        requested = str(body.get("model") or "auto")
        try:
            data, attempt = await self.chat(body, headers or {})
            result = parse_chat_response(data)
        except BackendError as exc:
            status = exc.status if isinstance(exc, BackendHTTPError) else 502
            self._account_error("agent", status, "upstream_error", started, requested)
            raise
        except RoutingError as exc:
            self._account_error("agent", exc.status_code, exc.code, started, requested)
            raise
        self.account(
            attempt,
            "agent",
            200,
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            time.perf_counter() - started,
            model_requested=requested,
        )
        return result, attempt

    def _account_error(
        self, endpoint: str, status: int, code: str, started: float, requested: str
    ) -> None:
        self.account(
            None,
            endpoint,
            status,
            None,
            None,
            time.perf_counter() - started,
            model_requested=requested,
            error=code,
        )

    # ------------------------------------------------------------ accounting

    def _model_label(self, requested: str | None) -> str:
        """The metrics label for a request that reached no backend.

        Only known names: a label per made-up model name would let any caller grow
        the metric's series without bound.
        """
        if not requested:
            return ""
        known = requested in self.settings.aliases or any(
            requested in st.models for st in self.router.states.values()
        )
        return requested if known else "(unknown)"

    def account(
        self,
        attempt: Attempt | None,
        endpoint: str,
        status: int,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        duration_s: float,
        *,
        model_requested: str | None = None,
        key_id: str | None = None,
        stream: bool = False,
        error: str | None = None,
    ) -> None:
        provider = attempt.state.name if attempt and attempt.state else "none"
        model = attempt.model if attempt else self._model_label(model_requested)
        prompt_tokens, completion_tokens = _count(prompt_tokens), _count(completion_tokens)
        m = self.metrics
        m.child(m.requests, endpoint, model, provider, str(status)).inc()
        if duration_s:
            m.child(m.duration, endpoint, provider).observe(duration_s)
        if prompt_tokens:
            m.child(m.tokens, provider, "prompt").inc(prompt_tokens)
        if completion_tokens:
            m.child(m.tokens, provider, "completion").inc(completion_tokens)
        if error:
            m.child(m.errors, error.split(":", 1)[0][:40]).inc()
        if self.request_log is not None and endpoint != "agent":
            self.request_log.record(
                {
                    "ts": time.time(),
                    "key_id": key_id,
                    "endpoint": endpoint,
                    "model_requested": model_requested,
                    "model_used": model or None,
                    "backend": provider if attempt and attempt.state else None,
                    "stream": stream,
                    "status": status,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "duration_ms": duration_s * 1000,
                    "error": error,
                }
            )


def _with_model(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The body to send: the caller's own object when the model name stays (so its original
    bytes can be forwarded unchanged), else a copy naming ``model``."""
    if not model or body.get("model") == model:
        return body
    return {**body, "model": model}


def _count(value: Any) -> int | None:
    """A token count from a backend's usage, or None when it is not a sane integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def sse(data: dict[str, Any] | bytes | str) -> bytes:
    if isinstance(data, dict):
        data = json.dumps(data, separators=(",", ":"))
    if isinstance(data, str):
        data = data.encode()
    return b"data: " + data + b"\n\n"
