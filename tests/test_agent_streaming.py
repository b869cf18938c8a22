"""Streamed runs: model_delta events carry the tokens; streamed tool calls are reassembled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2

from local_ai_router.agent.model_client import StreamAssembler
from local_ai_router.server import create_app
from local_ai_router.testing import Reply, ScriptedBackend, tool_call


async def sse_events(http: httpx2.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = await http.post("/agent/run", json={**body, "stream": True})
    return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]


async def test_streamed_run_emits_deltas_and_reassembles_tool_calls(
    served, make_settings, tmp_path: Path
):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("content of a\n")
    script = [
        Reply(
            content="Let me read the file first.",
            tool_calls=[tool_call("read_file", {"path": "a.txt", "start_line": 1})],
        ),
        "<think>done</think>I read it; nothing else to do.",
        "The file says: content of a.",
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        settings = make_settings(
            backends=[{"name": "b", "url": backend.url, "kind": "vllm", "models": ["m"]}],
            agent={"workspace": str(ws)},
        )
        url = await served(create_app(settings))
        async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
            events = await sse_events(http, {"task": "read a"})
    assert all(r.get("stream") is True for r in backend.requests)
    deltas = [e for e in events if e["type"] == "model_delta"]
    assert "".join(d["text"] for d in deltas).startswith("Let me read the file first.")
    action = next(e for e in events if e["type"] == "action")
    assert action["tool"] == "read_file" and action["args"] == {"path": "a.txt", "start_line": 1}
    result = next(e for e in events if e["type"] == "tool_result")
    assert "content of a" in result["output"]
    final = events[-1]
    assert (
        final["status"] == "completed" and final["final_answer"] == "The file says: content of a."
    )
    assert final["usage"]["prompt_tokens"] > 0  # usage arrives in the stream's last chunk


def test_assembler_tolerates_garbage_and_fragments():
    asm = StreamAssembler()

    def call_delta(**fn: object) -> bytes:
        return json.dumps({"choices": [{"delta": {"tool_calls": [{"index": 0, **fn}]}}]}).encode()

    chunks = [
        b'{"choices":[{"delta":{"role":"assistant","content":"Hi"}}]}',
        b"not json",
        b'["a list"]',
        call_delta(id="c1", function={"name": "read_", "arguments": ""}),
        call_delta(function={"name": "file", "arguments": '{"pa'}),
        call_delta(function={"arguments": 'th": "x"}'}),
        b'{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}',
        b'{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}',
    ]
    seen: list[str] = []
    for c in chunks:
        asm.feed(c, seen.append)
    result = asm.result()
    assert seen == ["Hi"] and result.content == "Hi"
    assert (
        result.tool_calls[0].name == "read_file"
        and result.tool_calls[0].arguments == '{"path": "x"}'
    )
    assert result.finish_reason == "tool_calls" and result.usage.prompt_tokens == 7


async def test_streamed_run_without_a_usage_chunk_estimates_usage(
    served, make_settings, tmp_path: Path
):
    """llama.cpp's Python server ignores include_usage: the run's usage is estimated, not 0."""
    async with ScriptedBackend(
        ["All done here.", "All done here."], models=["m"], quirks={"llamacpp_no_stream_usage"}
    ) as backend:
        settings = make_settings(
            backends=[{"name": "b", "url": backend.url, "kind": "llamacpp", "models": ["m"]}],
            agent={"workspace": str(tmp_path)},
        )
        url = await served(create_app(settings))
        async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
            events = await sse_events(http, {"task": "say you are done"})
    deltas = [e for e in events if e["type"] == "model_delta"]
    final = events[-1]
    assert final["status"] == "completed" and deltas, final["error"]
    assert final["usage"]["completion_tokens"] == len(deltas)  # one per streamed piece
    assert final["usage"]["prompt_tokens"] > 100  # system prompt and tools, chars / 4


def test_assembler_counts_pieces_and_knows_when_usage_was_reported():
    asm = StreamAssembler()
    for piece in ("a", "b", ""):
        asm.feed(json.dumps({"choices": [{"delta": {"content": piece}}]}).encode())
    assert asm.pieces == 2 and not asm.usage_reported
    asm.feed(b'{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}')
    assert asm.usage_reported and asm.usage.completion_tokens == 3
