"""Gateway overhead: direct vs. local-ai-router vs. LiteLLM's proxy, on one upstream, one run.

Three processes serve while a fourth generates load:

* the upstream: ``ScriptedBackend`` (a real OpenAI-compatible server) with a fixed reply;
* ours: ``lar serve`` with a config pointing at it (defaults: routing, metrics and the
  request log on);
* LiteLLM: ``litellm --config`` from its own venv (``bench/.venvs/litellm``, installed on
  first use), ``openai/<model>`` with ``api_base`` = the upstream.

The load generator (its own process; the same client for all three: a minimal keep-alive
HTTP/1.1 client on asyncio, or httpx2 with ``--client httpx2``) measures non-streamed latency
at concurrency 1, throughput at concurrency 16, and the streamed time to first token.
The table reports what each proxy adds over the direct call and ours / LiteLLM throughput;
a last line compares ours' request-log rows with the calls it answered (a dropped row shows).

    .venv/bin/python bench/gateway.py            # full run (~3 min after the one-time install)
    .venv/bin/python bench/gateway.py --quick    # smoke run (< 30 s; LiteLLM only if installed)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c

LITELLM_SPEC = os.environ.get("BENCH_LITELLM_SPEC", "litellm[proxy]==1.82.6")
MODEL = "bench-model"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say something short about gateways."}],
    "max_tokens": 64,
}
TARGETS = {"p50_added_ms": 1.5, "ttft_added_ms": 3.0, "throughput_ratio": 8.0}


@dataclass
class Settings:
    latency_requests: int = 500
    latency_warmup: int = 50
    concurrency: int = 16
    duration_s: float = 10.0
    throughput_warmup_s: float = 1.0
    streams: int = 100
    stream_warmup: int = 10
    rounds: int = 2
    floor: bool = True  # also measure a bare Starlette + httpx2 passthrough
    litellm: bool = True
    install: bool = True
    client: str = "raw"


@dataclass
class Target:
    name: str
    url: str  # OpenAI base URL (.../v1)
    pid: int  # the serving process, for its CPU time
    results: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- load generator


class RawClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams: ~0.1 ms of client CPU a call.

    httpx2 costs ~1 ms of CPU per request on this machine, which the load generator would
    take from the two cores the servers share; ``--client httpx2`` uses it anyway.
    """

    def __init__(self, url: str):
        hostport, _, path = url.split("://", 1)[1].partition("/")
        host, _, port = hostport.partition(":")
        self.host, self.port, self.path = host, int(port or 80), "/" + path
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None

    async def _send(self, payload: bytes) -> asyncio.StreamReader:
        if self._w is None or self._w.is_closing():
            self._r, self._w = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self._w.write(head.encode() + payload)
        assert self._r is not None
        return self._r

    async def _head(self, r: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        lines = (await r.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("connection", "").lower() == "close" and self._w is not None:
            self._w.close()  # read this answer, reconnect for the next
        return status, headers

    @staticmethod
    async def _chunks(r: asyncio.StreamReader, headers: dict[str, str]) -> Any:
        if "content-length" in headers:
            yield await r.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while size := int((await r.readuntil(b"\r\n")).split(b";")[0], 16):
                yield (await r.readexactly(size + 2))[:-2]
            await r.readuntil(b"\r\n")
        else:
            yield await r.read()

    async def post(self, payload: bytes) -> tuple[int, bytes]:
        r = await self._send(payload)
        status, headers = await self._head(r)
        return status, b"".join([chunk async for chunk in self._chunks(r, headers)])

    async def first_token(self, payload: bytes) -> tuple[float, bool]:
        t0 = time.perf_counter()
        r = await self._send(payload)
        status, headers = await self._head(r)
        first, done, buf = None, False, b""
        async for chunk in self._chunks(r, headers):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                first, done = _scan_sse(line, first, done, t0)
        return _ttft_result(first, done and status == 200)

    async def aclose(self) -> None:
        if self._w is not None:
            self._w.close()


class Httpx2Client:
    """The same interface on an httpx2.AsyncClient (one pooled connection)."""

    def __init__(self, url: str):
        import httpx2

        self.url = url
        limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
        self._c = httpx2.AsyncClient(limits=limits, timeout=60.0)
        self._h = {"content-type": "application/json"}

    async def post(self, payload: bytes) -> tuple[int, bytes]:
        r = await self._c.post(self.url, content=payload, headers=self._h)
        return r.status_code, r.content

    async def first_token(self, payload: bytes) -> tuple[float, bool]:
        t0 = time.perf_counter()
        first, done = None, False
        async with self._c.stream("POST", self.url, content=payload, headers=self._h) as r:
            async for line in r.aiter_lines():
                first, done = _scan_sse(line.encode(), first, done, t0)
            ok = r.status_code == 200
        return _ttft_result(first, done and ok)

    async def aclose(self) -> None:
        await self._c.aclose()


def _scan_sse(line: bytes, first: float | None, done: bool, t0: float) -> tuple[float | None, bool]:
    """Note the first chunk with non-empty content and the closing [DONE]."""
    if not line.startswith(b"data:"):
        return first, done
    data = line[5:].strip()
    if data == b"[DONE]":
        return first, True
    if first is None:
        for choice in json.loads(data).get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                return (time.perf_counter() - t0) * 1000, done
    return first, done


def _ttft_result(first: float | None, ok: bool) -> tuple[float, bool]:
    return (first if first is not None else float("nan")), ok and first is not None


def _summary(samples: list[float], n: int, errors: int) -> dict[str, Any]:
    return {"samples": [round(x, 4) for x in samples], "n": n, "errors": errors}


async def _latency(client: Any, n: int, warmup: int) -> dict[str, Any]:
    payload = json.dumps(BODY).encode()
    for _ in range(warmup):
        await client.post(payload)
    samples, errors = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        status, body = await client.post(payload)
        samples.append((time.perf_counter() - t0) * 1000)
        errors += status != 200 or c.CHAT_TEXT.encode() not in body
    return _summary(samples, n, errors)


async def _throughput(clients: list[Any], duration: float, warmup: float) -> dict[str, Any]:
    payload = json.dumps(BODY).encode()
    counts = {"ok": 0, "errors": 0, "total": 0}
    start = time.perf_counter() + warmup
    end = start + duration

    async def worker(client: Any) -> None:
        while (now := time.perf_counter()) < end:
            status, _ = await client.post(payload)
            counts["total"] += 1
            if now >= start and time.perf_counter() <= end:
                counts["ok" if status == 200 else "errors"] += 1

    await asyncio.gather(*(worker(cl) for cl in clients))
    return {**counts, "seconds": duration}


async def _ttft(client: Any, n: int, warmup: int) -> dict[str, Any]:
    payload = json.dumps({**BODY, "stream": True}).encode()
    for _ in range(warmup):
        await client.first_token(payload)
    samples, errors = [], 0
    for _ in range(n):
        ms, ok = await client.first_token(payload)
        if ok:
            samples.append(ms)
        errors += not ok
    return _summary(samples, n, errors)


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    kind, url = spec["kind"], spec["url"].rstrip("/") + "/chat/completions"
    make = Httpx2Client if spec.get("client") == "httpx2" else RawClient
    clients = [make(url) for _ in range(max(1, int(spec.get("concurrency", 1))))]
    try:
        if kind == "latency":
            return await _latency(clients[0], spec["n"], spec["warmup"])
        if kind == "throughput":
            return await _throughput(clients, spec["duration"], spec["warmup"])
        if kind == "ttft":
            return await _ttft(clients[0], spec["n"], spec["warmup"])
        raise ValueError(f"unknown load kind {kind!r}")
    finally:
        for cl in clients:
            await cl.aclose()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh load-generator process (never in this one)."""
    argv = [str(c.MAIN_PYTHON), str(Path(__file__).resolve()), "--load", json.dumps(spec)]
    budget = 300 + spec.get("duration", 0)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=budget, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed for {spec}:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- servers


def start_ours(upstream: str, tmp: Path) -> c.Proc:
    port = c.free_port()
    cfg = tmp / "lar.yaml"
    cfg.write_text(
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        f'storage: {{url: "sqlite+aiosqlite:///{tmp}/lar.db"}}\n'
        "backends:\n"
        "  - name: upstream\n"
        f"    url: {upstream}\n"
        "    kind: openai\n"
        f"    models: [{MODEL}]\n"
        "    max_concurrent: 64   # the benchmark's own concurrency must not queue\n"
    )
    env = {**os.environ, "LAR_HOME": str(tmp)}
    env = {k: v for k, v in env.items() if k == "LAR_HOME" or not k.startswith("LAR_")}
    lar = c.ROOT / ".venv" / "bin" / "lar"
    proc = c.start_proc(
        "ours", [str(lar), "serve", "--config", str(cfg)], log=tmp / "ours.log", env=env, cwd=tmp
    )
    proc.url = f"http://127.0.0.1:{port}/v1"
    proc.extra["health"] = f"http://127.0.0.1:{port}/health"
    return proc


def start_passthrough(upstream: str, tmp: Path) -> c.Proc:
    port = c.free_port()
    argv = [
        str(c.MAIN_PYTHON),
        str(c.BENCH_DIR / "_common.py"),
        "passthrough",
        "--upstream",
        upstream,
        "--port",
        str(port),
    ]
    proc = c.start_proc("passthrough", argv, log=tmp / "passthrough.log", cwd=tmp)
    proc.url = f"http://127.0.0.1:{port}/v1"
    proc.extra["health"] = f"http://127.0.0.1:{port}/health"
    return proc


def start_litellm(python: Path, upstream: str, tmp: Path, provider: str = "openai") -> c.Proc:
    """``provider``: LiteLLM's prefix for the upstream (``hosted_vllm`` keeps its Anthropic
    endpoint on chat completions; with ``openai`` it calls the Responses API)."""
    port = c.free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: {provider}/{MODEL}\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    # The local cost map: the proxy would otherwise fetch it from the internet at start.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
    argv = [
        str(python.parent / "litellm"),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = c.start_proc("litellm", argv, log=tmp / "litellm.log", env=env, cwd=tmp)
    proc.url = f"http://127.0.0.1:{port}/v1"
    proc.extra["health"] = f"http://127.0.0.1:{port}/health/liveliness"
    return proc


def check_target(t: Target) -> None:
    """One request each way before measuring: a wrong answer must not be timed."""
    import httpx2

    r = httpx2.post(f"{t.url}/chat/completions", json=BODY, timeout=30)
    text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
    if r.status_code != 200 or text != c.CHAT_TEXT:
        raise RuntimeError(f"{t.name}: unexpected reply {r.status_code}: {text[:300]!r}")


# --------------------------------------------------------------------------- the run


def run_measurements(targets: list[Target], s: Settings) -> None:
    """Every measurement of every target, interleaved, ``s.rounds`` times (samples pooled)."""
    plan = [
        ("latency", {"n": s.latency_requests, "warmup": s.latency_warmup}),
        ("ttft", {"n": s.streams, "warmup": s.stream_warmup}),
        (
            "throughput",
            {
                "concurrency": s.concurrency,
                "duration": s.duration_s,
                "warmup": s.throughput_warmup_s,
            },
        ),
    ]
    for rnd in range(s.rounds):
        for kind, params in plan:
            for t in targets:
                print(
                    f"[run] round {rnd + 1}/{s.rounds} {kind:<10} {t.name}",
                    file=sys.stderr,
                    flush=True,
                )
                cpu0 = c.cpu_seconds(t.pid)
                out = measure({"kind": kind, "url": t.url, "client": s.client, **params})
                out["cpu_s"] = c.cpu_seconds(t.pid) - cpu0
                _pool(t.results.setdefault(kind, {}), out)


def _pool(into: dict[str, Any], out: dict[str, Any]) -> None:
    for key, value in out.items():
        if isinstance(value, list):
            into.setdefault(key, []).extend(value)
        elif isinstance(value, int | float):
            into[key] = into.get(key, 0) + value


def summarize(t: Target) -> dict[str, float]:
    r, nan = t.results, float("nan")
    tp = r["throughput"]

    def pct(kind: str, q: float) -> float:
        samples = r[kind].get("samples") or []
        return c.percentile(samples, q) if samples else nan

    return {
        "lat_p50": pct("latency", 50),
        "lat_p95": pct("latency", 95),
        "ttft_p50": pct("ttft", 50),
        "ttft_p95": pct("ttft", 95),
        "rps": tp["ok"] / tp["seconds"],
        "cpu_ms": 1000 * tp["cpu_s"] / max(tp["total"], 1),
        "errors": sum(int(r[k].get("errors", 0)) for k in r),
    }


def _f(x: float, fmt: str = ".2f") -> str:
    return "n/a" if x != x else format(x, fmt)


ROWS = [
    ("latency p50, concurrency 1 (ms)", "lat_p50", True),
    ("latency p95, concurrency 1 (ms)", "lat_p95", True),
    ("time to first token p50, streamed (ms)", "ttft_p50", True),
    ("time to first token p95, streamed (ms)", "ttft_p95", True),
    ("throughput, concurrency 16 (req/s)", "rps", False),
    ("server CPU per request at concurrency 16 (ms)", "cpu_ms", False),
]


def report(targets: list[Target], s: Settings) -> tuple[str, bool]:
    sums = {t.name: summarize(t) for t in targets}
    d, o, lite = sums["direct"], sums["ours"], sums.get("litellm")
    proxies = [n for n in sums if n != "direct"]
    header = ["measure", *sums, *(f"{n} - direct" for n in proxies)]
    rows = []
    for label, key, delta in ROWS:
        fmt = ".0f" if key == "rps" else ".2f"
        row = [label.replace("16", str(s.concurrency)), *(_f(v[key], fmt) for v in sums.values())]
        row += [_f(sums[n][key] - d[key], "+.2f") if delta else "" for n in proxies]
        rows.append(row)
    added, ttft = o["lat_p50"] - d["lat_p50"], o["ttft_p50"] - d["ttft_p50"]
    goals = [
        (
            "added latency p50, concurrency 1",
            f"{_f(added, '+.2f')} ms",
            f"<= +{TARGETS['p50_added_ms']} ms",
            added <= TARGETS["p50_added_ms"],
        ),
        (
            "added time to first token p50",
            f"{_f(ttft, '+.2f')} ms",
            f"<= +{TARGETS['ttft_added_ms']} ms",
            ttft <= TARGETS["ttft_added_ms"],
        ),
    ]
    if lite:
        ratio = o["rps"] / max(lite["rps"], 1e-9)
        goals.append(
            (
                f"throughput ours / LiteLLM, concurrency {s.concurrency}",
                f"{ratio:.1f}x",
                f">= {TARGETS['throughput_ratio']:.0f}x",
                ratio >= TARGETS["throughput_ratio"],
            )
        )
    lines = [
        c.markdown_table(header, rows),
        "",
        c.markdown_table(
            ["target", "measured", "goal", "met"],
            [[g, m, goal, "yes" if ok else "NO"] for g, m, goal, ok in goals],
        ),
        "",
        f"Machine: {c.machine_facts()}.",
        f"Per target and round: {s.latency_requests} sequential requests (after "
        f"{s.latency_warmup} warm-up), {s.streams} streams, {s.duration_s:g} s at concurrency "
        f"{s.concurrency}; {s.rounds} round(s), interleaved, samples pooled; {s.client} client. "
        f"Failed requests: " + ", ".join(f"{n} {v['errors']}" for n, v in sums.items()) + ". "
        f"LiteLLM: {LITELLM_SPEC if lite else 'not measured'}.",
    ]
    return "\n".join(lines), all(ok for *_, ok in goals)


def _start_servers(s: Settings, upstream: str, tmp: Path) -> list[c.Proc]:
    procs = [start_ours(upstream, tmp)]
    if s.floor:
        procs.append(start_passthrough(upstream, tmp))
    if s.litellm:
        python = c.venv_python("litellm", [LITELLM_SPEC], install=s.install)
        if python is None:
            print(
                "[skip] LiteLLM is not installed; a run without --quick installs it",
                file=sys.stderr,
            )
        else:
            procs.append(start_litellm(python, upstream, tmp))
    for p in procs:  # started together: LiteLLM's ~15 s start overlaps ours
        c.wait_http(p.extra["health"], p, timeout=180)
    return procs


def _sent_to(t: Target, s: Settings) -> int:
    """Every call a target answered in this run: the check, warm-ups and measured calls."""
    r = t.results
    warmups = s.rounds * (s.latency_warmup + s.stream_warmup)
    return 1 + warmups + r["latency"]["n"] + r["ttft"]["n"] + r["throughput"]["total"]


def _log_rows(db: Path) -> int | None:
    """Rows in ours' request log (written off the hot path): a dropped row shows here."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db)) as con:
            return int(con.execute("SELECT count(*) FROM request_log").fetchone()[0])
    except sqlite3.Error:
        return None


def run(s: Settings, json_out: Path | None) -> bool:
    with tempfile.TemporaryDirectory(prefix="lar-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with c.start_upstream("chat", log=tmp / "upstream.log") as up:
            procs: list[c.Proc] = []
            try:
                procs = _start_servers(s, up.url, tmp)
                targets = [Target("direct", up.url, up.popen.pid)]
                targets += [Target(p.name, p.url, p.popen.pid) for p in procs]
                for t in targets:
                    check_target(t)
                run_measurements(targets, s)
            finally:
                for p in procs:
                    p.stop()  # ours flushes its request log as it stops
            rows = _log_rows(tmp / "lar.db")
    text, ok = report(targets, s)
    ours = next(t for t in targets if t.name == "ours")
    print(text)
    print(f"Request log of ours: {rows} rows for {_sent_to(ours, s)} requests (one row a call).")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({t.name: summarize(t) for t in targets}, indent=2))
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Gateway overhead vs. direct and LiteLLM's proxy.")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (< 30 s): fewer requests, one round, no LiteLLM",
    )
    p.add_argument(
        "--litellm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure LiteLLM (default: yes, except with --quick)",
    )
    p.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure a bare Starlette + httpx2 passthrough (default: yes)",
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 2)")
    p.add_argument("--requests", type=int, help="latency requests per round (default 500)")
    p.add_argument("--duration", type=float, help="throughput seconds per round (default 10)")
    p.add_argument("--streams", type=int, help="streams per round (default 100)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--client", choices=["raw", "httpx2"], default="raw", help="load client")
    p.add_argument("--json", type=Path, help="also write the summary here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--load", help=argparse.SUPPRESS)  # internal: the load-generator process
    args = p.parse_args(argv)
    if args.load:
        print(json.dumps(asyncio.run(_load(json.loads(args.load)))))
        return 0
    s = Settings(concurrency=args.concurrency, client=args.client, floor=args.floor)
    if args.quick:
        s.rounds, s.latency_requests, s.latency_warmup, s.duration_s = 1, 100, 10, 2.0
        s.throughput_warmup_s, s.streams, s.stream_warmup = 0.5, 20, 3
        s.litellm = s.install = False
    if args.litellm is not None:
        s.litellm = args.litellm
    s.rounds = args.rounds or s.rounds
    s.latency_requests = args.requests or s.latency_requests
    s.duration_s = args.duration or s.duration_s
    s.streams = args.streams or s.streams
    if min(s.rounds, s.latency_requests, s.streams, s.concurrency) < 1 or s.duration_s <= 0:
        p.error("--rounds, --requests, --streams, --concurrency and --duration must be positive")
    ok = run(s, args.json)
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
