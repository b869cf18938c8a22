"""Shared pieces of the benchmarks: peer venvs, the upstream process, subprocesses, tables.

The benchmarks run as plain scripts (``.venv/bin/python bench/NAME.py``), so this module
is imported as ``_common`` (the script's folder is on ``sys.path``). Run as a script it is
the scripted upstream model server, in its own process so it never shares an event loop
or the GIL with what is measured::

    python bench/_common.py upstream --mode chat          # prints its base URL, then serves
    python bench/_common.py upstream --mode agent --steps 50

It stops when its stdin closes (the parent exited) or after ``--max-life`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "AGENT_ANSWER",
    "AGENT_FILE",
    "AGENT_FILE_TEXT",
    "AGENT_TOOL",
    "AGENT_TOOL_ARGS",
    "BENCH_DIR",
    "CHAT_TEXT",
    "MAIN_PYTHON",
    "ROOT",
    "Proc",
    "cpu_seconds",
    "free_port",
    "machine_facts",
    "markdown_table",
    "percentile",
    "start_proc",
    "start_upstream",
    "venv_python",
    "wait_http",
]

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENVS = BENCH_DIR / ".venvs"
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"

#: What the chat upstream answers (about 60 tokens; streamed as ~45 word pieces).
CHAT_TEXT = (
    "Routing requests through a local gateway adds a small, fixed cost per call; the "
    "benchmark measures that cost against a direct call and against another proxy, "
    "so the numbers say what the router itself takes, not what the model takes."
)
#: The agent benchmark's cheap tool call: every step but the last reads this small file.
AGENT_TOOL = "read_file"
AGENT_FILE = "notes.txt"
AGENT_TOOL_ARGS = {"path": AGENT_FILE}
AGENT_ANSWER = "done: the answer is 42"
AGENT_FILE_TEXT = "".join(f"line {i}: the answer is 42\n" for i in range(1, 21))
_STREAM_CHUNK_DELAY_S = 0.001  # streamed replies trickle, as real servers do
_MARKER = ".bench-installed"


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0-100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_facts() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average at the end {load}"
    )


# --------------------------------------------------------------------------- peer venvs


def venv_python(name: str, requirements: Sequence[str], *, install: bool = True) -> Path | None:
    """The python of ``bench/.venvs/NAME`` with ``requirements`` installed (reused when present).

    Returns None when the venv is missing and ``install`` is False (quick runs never install).
    """
    root = VENVS / name
    python = root / "bin" / "python"
    marker = root / _MARKER
    wanted = "\n".join(requirements)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not install:
        return None
    print(f"[setup] installing {' '.join(requirements)} into {root} (once) ...", file=sys.stderr)
    if root.exists():
        shutil.rmtree(root)
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", str(root)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *requirements], check=True)
    marker.write_text(wanted)
    return python


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A child process the benchmark owns; ``stop()`` ends it (and only it)."""

    name: str
    popen: subprocess.Popen[str]
    log: Path | None = None
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        p = self.popen
        if p.poll() is None:
            with contextlib.suppress(OSError):
                if p.stdin is not None:
                    p.stdin.close()  # the upstream exits on EOF
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)

    def log_tail(self, n: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def start_proc(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    out: TextIO = log.open("w")
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
    )
    out.close()
    return Proc(name, popen, log)


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers (any status below 500); fail early if ``proc`` died."""
    import httpx2

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} during start:\n{proc.log_tail()}"
            )
        try:
            r = httpx2.get(url, timeout=2.0)
            if r.status_code < 500:
                return
            last = r.status_code
        except httpx2.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(
        f"{proc.name} did not answer {url} in {timeout:.0f}s ({last!r}):\n{proc.log_tail()}"
    )


@contextlib.contextmanager
def start_upstream(mode: str, *, steps: int = 50, log: Path) -> Iterator[Proc]:
    """The ScriptedBackend in its own process; yields it with ``url`` = its OpenAI base URL."""
    argv = [
        str(MAIN_PYTHON),
        str(Path(__file__).resolve()),
        "upstream",
        "--mode",
        mode,
        "--steps",
        str(steps),
    ]
    popen = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True
    )
    proc = Proc("upstream", popen, log)
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"upstream did not start ({line!r}):\n{proc.log_tail()}")
        proc.url = line
        yield proc
    finally:
        proc.stop()


# --------------------------------------------------------------------------- the upstream


def _count_tool_results(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages") or () if m.get("role") == "tool")


def _chat_script(body: dict[str, Any]) -> Any:
    from local_ai_router.testing import Reply

    if body.get("stream") is True:
        return Reply(content=CHAT_TEXT, chunk_delay=_STREAM_CHUNK_DELAY_S)
    return Reply(content=CHAT_TEXT)


def _agent_script(steps: int) -> Any:
    from local_ai_router.testing import Reply, tool_call

    def reply(body: dict[str, Any]) -> Any:
        # Stateless: the step is read from the conversation, so any client (and any number
        # of runs, one after another) gets the same 50-step script.
        if _count_tool_results(body) < steps - 1:
            return Reply(tool_calls=[tool_call(AGENT_TOOL, AGENT_TOOL_ARGS)])
        return Reply(tool_calls=[tool_call("task_complete", {"answer": AGENT_ANSWER})])

    return reply


async def _serve_upstream(mode: str, steps: int, max_life: float) -> None:
    from local_ai_router.testing import ScriptedBackend

    script = _chat_script if mode == "chat" else _agent_script(steps)
    backend = ScriptedBackend(models=["bench-model"], kind="openai", default=script, record=False)
    await backend.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed the pipe or died
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(backend.url, flush=True)
    try:
        await asyncio.wait_for(stop.wait(), max_life)
    except TimeoutError:
        print(f"upstream: stopping after --max-life {max_life:.0f}s", file=sys.stderr)
    finally:
        await backend.stop()


# --------------------------------------------------------------------------- the floor


def _passthrough_app(upstream: str) -> Any:
    """The least a Python proxy on this stack can do: Starlette + one pooled httpx2 client."""
    import httpx2
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    client = httpx2.AsyncClient(base_url=upstream, limits=limits, timeout=60.0)
    headers = {"content-type": "application/json"}

    async def chat(request: Request) -> Response:
        body = await request.body()
        if b'"stream":true' not in body.replace(b" ", b""):
            r = await client.post("/chat/completions", content=body, headers=headers)
            return Response(r.content, r.status_code, media_type="application/json")
        req = client.build_request("POST", "/chat/completions", content=body, headers=headers)
        r = await client.send(req, stream=True)

        async def relay() -> Any:
            try:
                async for chunk in r.aiter_raw():
                    yield chunk
            finally:
                await r.aclose()

        return StreamingResponse(relay(), r.status_code, media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    routes = [Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)]
    return Starlette(routes=routes)


def _serve_passthrough(upstream: str, port: int) -> None:
    import uvicorn

    # uvicorn.run's defaults, as `lar serve` uses them
    uvicorn.run(
        _passthrough_app(upstream),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upstream", help="serve the scripted upstream model")
    up.add_argument("--mode", choices=["chat", "agent"], default="chat")
    up.add_argument("--steps", type=int, default=50)
    up.add_argument("--max-life", type=float, default=1800.0)
    fl = sub.add_parser("passthrough", help="serve the bare Starlette + httpx2 passthrough")
    fl.add_argument("--upstream", required=True)
    fl.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "passthrough":
        _serve_passthrough(args.upstream, args.port)
        return 0
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    asyncio.run(_serve_upstream(args.mode, args.steps, args.max_life))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
