"""Background health checks, model and context-window discovery, availability signal.

- Each backend is checked every ``health.interval_s``; ``failures_to_unhealthy``
  failures in a row mark it unhealthy, one success restores it.
- Models not listed in the config are discovered from ``GET /models``; each
  model's real context window from the server (see ``backends.profiles``).
- The availability URL (e.g. a gaming PC's status endpoint) is polled; while it
  says busy, ``routing.availability_backends`` are skipped. A stale or
  unreachable signal counts as "not busy": health checks catch a dead host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx2

from ..config import Settings
from .routing import BackendState, Router

__all__ = ["HealthMonitor", "is_busy"]

log = logging.getLogger(__name__)

_BUSY_KEYS = ("gaming_mode", "busy", "gaming", "in_use")


def is_busy(payload: Any) -> bool:
    """Read a status document: ``{gaming_mode: true}``, ``{busy: true}``, ``{available: false}``."""
    if isinstance(payload, bool):
        return payload
    if not isinstance(payload, dict):
        return False
    if any(payload.get(k) is True for k in _BUSY_KEYS):
        return True
    if payload.get("available") is False:
        return True
    return str(payload.get("status", "")).lower() in ("busy", "gaming", "unavailable")


class HealthMonitor:
    def __init__(self, settings: Settings, router: Router, *, on_change: Any = None):
        self.settings = settings
        self.router = router
        self.on_change = on_change  # callable(state) for metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx2.AsyncClient | None = None
        self.availability_busy = False
        self.availability_checked_at: float | None = None
        self.availability_error: str | None = None

    async def start(self) -> None:
        await asyncio.gather(*(self.check(st) for st in self.router.states.values()))
        for st in self.router.states.values():
            self._tasks.append(asyncio.create_task(self._loop(st), name=f"health:{st.name}"))
        if self.settings.routing.availability_url:
            self._client = httpx2.AsyncClient(timeout=5.0)
            await self.poll_availability()
            self._tasks.append(asyncio.create_task(self._availability_loop(), name="availability"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._client:
            await self._client.aclose()

    async def _loop(self, st: BackendState) -> None:
        while True:
            await asyncio.sleep(self.settings.health.interval_s)
            try:
                await self.check(st)
            except Exception:  # a checker bug must not stop checking
                log.exception("health check of %s failed", st.name)

    async def check(self, st: BackendState) -> bool:
        cfg = self.settings.health
        ok = await st.backend.health(cfg.timeout_s)
        st.last_check = time.time()
        was = st.healthy
        if ok:
            self.router.record_success(st)
            if not st.models or not st.context_windows:
                await self.discover(st)
        else:
            self.router.record_failure(st, "health check failed", cfg.failures_to_unhealthy)
        if self.on_change and was != st.healthy:
            self.on_change(st)
        return ok

    async def discover(self, st: BackendState) -> None:
        """Fill in models (when not configured) and each model's context window."""
        if not st.models:
            try:
                st.models = [str(m["id"]) for m in await st.backend.models()]
            except Exception as exc:
                st.last_error = f"model discovery failed: {exc}"
                return
        for model in st.models:
            if model in st.context_windows:
                continue
            window = await st.backend.discover_context_window(model)
            if window:
                st.context_windows[model] = window

    async def _availability_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.routing.availability_interval_s)
            await self.poll_availability()

    async def poll_availability(self) -> None:
        cfg = self.settings.routing
        assert cfg.availability_url and self._client is not None
        try:
            r = await self._client.get(cfg.availability_url)
            r.raise_for_status()
            self.availability_busy = is_busy(r.json())
            self.availability_checked_at = time.time()
            self.availability_error = None
        except Exception as exc:
            self.availability_error = f"{type(exc).__name__}: {exc}"
            stale = (
                self.availability_checked_at is None
                or time.time() - self.availability_checked_at > cfg.availability_stale_s
            )
            if stale:
                self.availability_busy = False
        self.router.unavailable = (
            set(cfg.availability_backends) if self.availability_busy else set()
        )

    def availability(self) -> dict[str, Any] | None:
        if not self.settings.routing.availability_url:
            return None
        return {
            "url": self.settings.routing.availability_url,
            "busy": self.availability_busy,
            "checked_at": self.availability_checked_at,
            "error": self.availability_error,
            "backends": list(self.settings.routing.availability_backends),
        }
