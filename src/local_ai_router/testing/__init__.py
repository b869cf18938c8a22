"""A scripted, real OpenAI-compatible model server for tests and benchmarks.

``ScriptedBackend`` runs uvicorn + a small Starlette app on ``127.0.0.1`` (a free port) and
answers ``POST /v1/chat/completions`` from a script of :class:`Reply` objects, recording every
request it receives. It speaks plain JSON and SSE streaming (content and tool calls, split the
way real servers split them), errors, delays, malformed output and mid-stream drops, and
emulates a few server quirks, so gateway and agent code is tested against real HTTP::

    async with ScriptedBackend(["hello", Reply(tool_calls=[tool_call("f", {"x": 1})])]) as b:
        client = openai.AsyncOpenAI(base_url=b.url, api_key="x")
        ...
        assert b.requests[0]["messages"][-1]["content"] == "hi"

Sync code (CLI tests, benchmarks) uses ``with backend.run_in_thread(): ...``.

Request handling order for a chat request: health (503) -> API key (401) -> JSON and shape
(400) -> recorded in ``requests`` / ``headers`` -> quirks -> context limit (400, ``rejected``)
-> next script item (500 "script exhausted" when none is left and there is no default).
Only the last step consumes a script item: a request the server refuses leaves the script as
it was, so a client that retries differently gets the reply meant for it.

Layout (all public names are re-exported here; import them from ``local_ai_router.testing``):
``script`` (what a script holds: :class:`Reply`, :func:`tool_call`, :func:`tokens_estimate`),
``wire`` (OpenAI JSON / SSE bodies and their timed playback) and ``server``
(:class:`ScriptedBackend` itself).
"""

from __future__ import annotations

from .script import KNOWN_QUIRKS, Reply, ScriptItem, tokens_estimate, tool_call
from .server import ScriptedBackend

__all__ = [
    "KNOWN_QUIRKS",
    "Reply",
    "ScriptItem",
    "ScriptedBackend",
    "tokens_estimate",
    "tool_call",
]
