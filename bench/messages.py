"""The /v1/messages facade: what the Anthropic translation adds, against LiteLLM's.

One upstream (``ScriptedBackend``, OpenAI-compatible) behind ``lar serve`` and
LiteLLM's proxy (``bench/.venvs/litellm``, as in ``bench/gateway.py``). Measured with
the same keep-alive client, interleaved in rounds, at concurrency 1:

* ``direct``: the upstream's own ``/v1/chat/completions`` (the floor);
* ``ours chat``: our ``/v1/chat/completions`` (what the gateway alone adds);
* ``ours messages`` / ``litellm messages``: an Anthropic Messages request, translated.

Non-streamed latency (p50) and streamed time to the first text delta.

    .venv/bin/python bench/messages.py           # full run (LiteLLM installed on first use)
    .venv/bin/python bench/messages.py --quick   # smoke run, no LiteLLM
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import gateway as g

ANTHROPIC_BODY = {
    "model": g.MODEL,
    "max_tokens": 64,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Say something short about gateways."}],
}
OPENAI_BODY = {
    "model": g.MODEL,
    "max_tokens": 64,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say something short about gateways."},
    ],
}


def _first_delta(line: bytes) -> bool:
    """True for the first line that carries generated text, in either wire format."""
    if not line.startswith(b"data:"):
        return False
    data = line[5:].strip()
    if data == b"[DONE]" or not data:
        return False
    event = json.loads(data)
    if event.get("type") == "content_block_delta":
        return bool(event["delta"].get("text"))
    return any((ch.get("delta") or {}).get("content") for ch in event.get("choices") or ())


async def _ttft(client: g.RawClient, payload: bytes) -> float:
    t0 = time.perf_counter()
    r = await client._send(payload)
    status, headers = await client._head(r)
    first, buf = None, b""
    async for chunk in client._chunks(r, headers):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if first is None and _first_delta(line):
                first = (time.perf_counter() - t0) * 1000
    if status != 200 or first is None:
        raise RuntimeError(f"stream failed: HTTP {status}")
    return first


async def _measure(url: str, body: dict[str, Any], n: int, warmup: int) -> dict[str, list]:
    client = g.RawClient(url)
    plain, streamed = json.dumps(body).encode(), json.dumps({**body, "stream": True}).encode()
    lat, ttft = [], []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            status, content = await client.post(plain)
            if status != 200:
                raise RuntimeError(f"{url}: HTTP {status}: {content[:300]!r}")
            if i >= warmup:
                lat.append((time.perf_counter() - t0) * 1000)
        for i in range(warmup + max(1, n // 5)):
            value = await _ttft(client, streamed)
            if i >= warmup:
                ttft.append(value)
    finally:
        await client.aclose()
    return {"latency": lat, "ttft": ttft}


def _targets(procs: list[c.Proc], upstream: str) -> list[tuple[str, str, dict[str, Any]]]:
    base = {p.name: p.url.removesuffix("/v1") for p in procs}
    out = [
        ("direct", f"{upstream}/chat/completions", OPENAI_BODY),
        ("ours chat", f"{base['ours']}/v1/chat/completions", OPENAI_BODY),
        ("ours messages", f"{base['ours']}/v1/messages", ANTHROPIC_BODY),
    ]
    if "litellm" in base:
        out.append(("litellm messages", f"{base['litellm']}/v1/messages", ANTHROPIC_BODY))
    return out


def _start_servers(upstream: str, tmp: Path, litellm: bool, install: bool) -> list[c.Proc]:
    procs = [g.start_ours(upstream, tmp)]
    python = c.venv_python("litellm", [g.LITELLM_SPEC], install=install) if litellm else None
    if python is not None:
        procs.append(g.start_litellm(python, upstream, tmp, provider="hosted_vllm"))
    for p in procs:
        c.wait_http(p.extra["health"], p, timeout=180)
    return procs


def run(rounds: int, n: int, litellm: bool, install: bool) -> str:
    with tempfile.TemporaryDirectory(prefix="lar-bench-msg-") as tmpdir:
        tmp = Path(tmpdir)
        with c.start_upstream("chat", log=tmp / "upstream.log") as up:
            procs = _start_servers(up.url, tmp, litellm, install)
            try:
                targets = _targets(procs, up.url)
                pooled: dict[str, dict[str, list]] = {
                    t[0]: {"latency": [], "ttft": []} for t in targets
                }
                for _ in range(rounds):  # interleaved, so drift hits every target alike
                    for name, url, body in targets:
                        got = asyncio.run(_measure(url, body, n, warmup=max(5, n // 10)))
                        for k, v in got.items():
                            pooled[name][k] += v
            finally:
                for p in procs:
                    p.stop()
    return _report(pooled, rounds, n)


def _report(pooled: dict[str, dict[str, list]], rounds: int, n: int) -> str:
    direct = pooled["direct"]
    base_lat, base_ttft = c.median(direct["latency"]), c.median(direct["ttft"])
    rows = []
    for name, r in pooled.items():
        lat, ttft = c.median(r["latency"]), c.median(r["ttft"])
        rows.append(
            [
                name,
                f"{lat:.2f}",
                f"{lat - base_lat:+.2f}",
                f"{ttft:.2f}",
                f"{ttft - base_ttft:+.2f}",
            ]
        )
    table = c.markdown_table(["target", "p50 ms", "added p50 ms", "TTFT ms", "added TTFT ms"], rows)
    lines = [
        c.machine_facts(),
        f"{rounds} rounds x {n} requests (+ {max(1, n // 5)} streams)",
        table,
    ]
    if "litellm messages" in pooled:
        ours = c.median(pooled["ours messages"]["latency"]) - base_lat
        theirs = c.median(pooled["litellm messages"]["latency"]) - base_lat
        lines.append(
            f"/v1/messages overhead: LiteLLM adds {theirs / max(ours, 1e-9):.1f}x what ours adds"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The /v1/messages facade vs. LiteLLM's.")
    p.add_argument("--quick", action="store_true", help="smoke run, no LiteLLM")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--requests", type=int, default=300)
    args = p.parse_args(argv)
    if args.quick:
        print(run(1, 40, litellm=False, install=False))
    else:
        print(run(args.rounds, args.requests, litellm=True, install=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
