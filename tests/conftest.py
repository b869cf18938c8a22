"""Shared fixtures: isolated data dirs, settings builders, real servers on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local_ai_router.config import Settings
from local_ai_router.loopback import serve_app
from local_ai_router.testing import ScriptedBackend

__all__ = ["run_events", "run_lar", "serve_app"]


@pytest.fixture(autouse=True)
def lar_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own LAR_HOME; no test reads the user's config or data."""
    home = tmp_path / "lar-home"
    home.mkdir()
    monkeypatch.setenv("LAR_HOME", str(home))
    monkeypatch.delenv("LAR_CONFIG", raising=False)
    for var in list(os.environ):
        if var.startswith("LAR_") and var not in ("LAR_HOME",):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def make_settings(lar_home: Path) -> Callable[..., Settings]:
    def build(**tree: Any) -> Settings:
        tree.setdefault("storage", {"url": f"sqlite+aiosqlite:///{lar_home}/lar.db"})
        tree.setdefault("health", {"interval_s": 3600})
        return Settings.model_validate(tree)

    return build


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    """``base_url = await served(app)``: serve an ASGI app on loopback for the test's duration."""
    stack: list[Any] = []

    async def start(app: Any) -> str:
        cm = serve_app(app)
        url = await cm.__aenter__()
        stack.append(cm)
        return url

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Any]]:
    """``b = await backends(*script, **kw)``: ScriptedBackends stopped after the test."""
    started: list[ScriptedBackend] = []

    async def make(*script: Any, **kw: Any) -> ScriptedBackend:
        kw.setdefault("default", "ok")
        b = await ScriptedBackend(script, **kw).start()
        started.append(b)
        return b

    yield make
    for b in started:
        await b.stop()


async def run_events(settings: Settings, request: Any) -> list[dict[str, Any]]:
    """Start a Runtime, run one agent request to the end, stop; the run's events as dicts."""
    from local_ai_router.runtime import Runtime

    rt = Runtime.create(settings)
    await rt.start()
    try:
        active = await rt.agent.start_run(request)
        return [ev.to_dict() async for ev in active.stream()]
    finally:
        await rt.stop()


async def run_lar(*args: str, cwd: Path, timeout: float = 90) -> tuple[int, str, str]:
    """Run ``lar ARGS`` as a user would (a subprocess, no stdin); (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "local_ai_router",
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


EVERYTHING = (
    Path(__file__).resolve().parents[1]
    / "tests/.npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def everything(request: pytest.FixtureRequest) -> Iterator[str]:
    """server-everything in the transport the test names; yields its URL on 127.0.0.1."""
    transport = request.param
    port = free_port()
    # It listens on every interface; we only ever connect to the loopback address.
    proc = subprocess.Popen(
        ["node", str(EVERYTHING), transport],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"server-everything exited with {proc.returncode}")
                time.sleep(0.05)
        path = "/mcp" if transport == "streamableHttp" else "/sse"
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
