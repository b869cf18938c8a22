"""Fit the conversation into the model's real context window.

The budget is the backend's discovered window minus a reserve for the reply.
The size of the conversation is known exactly after each call (the server's
``usage.prompt_tokens``); only messages added since are estimated, as
characters / 4 times a ratio calibrated from those figures.

When the estimate passes ``threshold`` of the budget, the conversation is
reduced to well below it (so the next steps fit without compacting again),
cheapest first:

1. old tool outputs are shortened (head and tail kept, the cut said);
2. if that is not enough, older turns are summarised by the model in a side
   request without tools, and the conversation becomes: system prompt, the
   original task, the summary, and the most recent turns verbatim;
3. if still too large, the kept tool outputs are shortened harder.

A tool call is never separated from its result. If the server still rejects
the request as too long, the loop asks again with ``harder=True`` once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import CompactionConfig
from ..types import Message
from .seams import ModelClient

if TYPE_CHECKING:
    from .loop import AgentLoop

__all__ = ["Compactor", "estimate_chars", "estimate_messages", "shorten_tool_outputs"]

log = logging.getLogger(__name__)

SUMMARY_PROMPT = (
    "Summarize the conversation below for an agent that will continue the work without seeing it. "
    "Use these headings, be brief and concrete:\n"
    "Task: (the user's goal)\nDone so far: (actions and their results)\n"
    "Decisions: (what was decided and why)\nFiles touched: (paths)\nLeft to do: (next steps)"
)
_WINDOW_IN_ERROR = re.compile(
    r"maximum context length is (\d+)|context (?:size|window)[^0-9]{0,20}(\d+)"
)
SUMMARY_HEADER = "[Summary of earlier conversation, compacted to fit the context window]\n"


def estimate_chars(m: Message) -> int:
    n = 16  # role and framing
    content = m.get("content")
    if isinstance(content, str):
        n += len(content)
    elif isinstance(content, list):
        n += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    for call in m.get("tool_calls") or ():
        fn = call.get("function") or {}
        n += len(str(fn.get("name", ""))) + len(str(fn.get("arguments", ""))) + 24
    return n


def estimate_messages(messages: list[Message]) -> int:
    return sum(estimate_chars(m) for m in messages) // 4


def shorten_tool_outputs(
    messages: list[Message], *, keep_chars: int, keep_last: int
) -> list[Message]:
    """Cut every tool result but the last ``keep_last`` to its head and tail."""
    tool_idx = [i for i, m in enumerate(messages) if m.get("role") == "tool"]
    protected = set(tool_idx[len(tool_idx) - keep_last :]) if keep_last else set()
    out = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if (
            m.get("role") == "tool"
            and i not in protected
            and isinstance(content, str)
            and len(content) > keep_chars + 80
        ):
            head, tail = content[: keep_chars * 2 // 3], content[-(keep_chars // 3) :]
            cut = len(content) - len(head) - len(tail)
            m = {**m, "content": f"{head}\n[... {cut} characters cut by compaction ...]\n{tail}"}
        out.append(m)
    return out


@dataclass
class _Calibration:
    ratio: float = 1.0  # true tokens per (chars / 4)
    known_tokens: int | None = None  # exact size of messages[:known_count] (+ schemas)
    known_count: int = 0


class Compactor:
    """One per run; remembers the server's token counts to calibrate its estimates."""

    def __init__(
        self,
        model: ModelClient,
        config: CompactionConfig,
        *,
        model_name: str,
        window: int | None,
        max_tokens: int,
        task: str | None = None,
    ):
        self.model = model
        self.config = config
        self.model_name = model_name
        self.window = window
        self.max_tokens = max_tokens
        self.task = task  # the current run's task message is never summarised away
        self.cal = _Calibration()

    @property
    def budget(self) -> int | None:
        if not self.window:
            return None
        return max(256, self.window - self.max_tokens - self.config.reserve_tokens)

    def observe(self, sent: list[Message], extra_tokens: int, prompt_tokens: int) -> None:
        """Calibrate with the server's count for the request just sent."""
        if prompt_tokens <= 0:
            return
        est = estimate_messages(sent) + extra_tokens
        if est > 0:
            self.cal.ratio = min(4.0, max(0.25, prompt_tokens / est))
        self.cal.known_tokens = prompt_tokens
        self.cal.known_count = len(sent)

    def learn_window(self, error_text: str) -> None:
        """vLLM's rejection names the real window: use it when discovery found none."""
        m = _WINDOW_IN_ERROR.search(error_text)
        if m:
            window = int(m.group(1) or m.group(2))
            self.window = min(self.window, window) if self.window else window

    def tokens(self, messages: list[Message], extra_tokens: int = 0) -> int:
        """Exact for what the server counted, estimated for the rest."""
        c = self.cal
        if c.known_tokens is not None and c.known_count <= len(messages):
            return c.known_tokens + int(estimate_messages(messages[c.known_count :]) * c.ratio)
        return int((estimate_messages(messages) + extra_tokens) * c.ratio)

    async def fit(
        self, loop: AgentLoop, messages: list[Message], *, harder: bool, extra_tokens: int = 0
    ) -> list[Message]:
        """``messages`` itself when it fits, else a compacted copy (and a ``compaction`` event).

        ``extra_tokens`` is what the rest of the request costs (tool schemas, output schema).
        """
        before = self.tokens(messages, extra_tokens)
        budget = self.budget or (int(before * 0.6) if harder else None)
        if budget is None:
            return messages  # unknown window and no rejection yet
        if before <= budget * self.config.threshold and not harder:
            return messages
        await loop.hooks.pre_compact(loop)
        ratio = self.cal.ratio
        self.cal = _Calibration(ratio=ratio)  # the prefix is about to change
        schemas = int(extra_tokens * ratio)
        target = max(128, int(budget * (0.35 if harder else 0.55)) - schemas)
        # Shortening old tool outputs costs nothing; a summary costs a model call. Take the
        # cheap result when it leaves some room, summarise only when it does not.
        good_enough = (
            target if harder else max(target, int(budget * self.config.threshold * 0.85) - schemas)
        )
        out, removed = await self._reduce(messages, target, good_enough)
        after = self.tokens(out, extra_tokens)
        loop.emit("compaction", before_tokens=before, after_tokens=after, messages_removed=removed)
        return out

    async def _reduce(
        self, messages: list[Message], target: int, good_enough: int
    ) -> tuple[list[Message], int]:
        """Cheapest first: shorten old tool outputs, summarise old turns, shorten harder."""
        keep = self.config.tool_output_keep_chars
        out = shorten_tool_outputs(messages, keep_chars=keep, keep_last=1)
        if self.tokens(out) > good_enough:
            out = shorten_tool_outputs(out, keep_chars=keep // 3, keep_last=1)
        removed = 0
        if self.tokens(out) > good_enough:
            head, middle, recent = self._split(out)
            if middle:
                summary = await self._ask_summary(middle, target)
                out = [
                    *head,
                    {"role": "user", "content": SUMMARY_HEADER + summary},
                    {"role": "assistant", "content": "Understood; continuing from the summary."},
                    *recent,
                ]
                removed = len(middle)
        for keep_last, chars in ((1, keep // 3), (0, keep // 3), (0, 120)):
            if self.tokens(out) <= target:
                break
            out = shorten_tool_outputs(out, keep_chars=chars, keep_last=keep_last)
        return out, removed

    def _split(self, messages: list[Message]) -> tuple[list[Message], list[Message], list[Message]]:
        """(head: system + original task, middle to summarise, recent turns) on a safe boundary.

        The current run's task stays verbatim too when it is not the original (a resumed session).
        """
        head_end = 1
        for i in range(1, len(messages)):
            if messages[i].get("role") == "user":
                head_end = i + 1
                break
        cut = max(head_end, len(messages) - self.config.keep_recent_messages)
        if self.task is not None:
            for i in range(head_end, cut):
                if messages[i].get("role") == "user" and messages[i].get("content") == self.task:
                    cut = i
                    break
        # Never start the kept tail with a tool result: its call would be summarised away.
        while cut < len(messages) and messages[cut].get("role") == "tool":
            cut += 1
        return messages[:head_end], messages[head_end:cut], messages[cut:]

    async def _ask_summary(self, middle: list[Message], target: int) -> str:
        body: dict[str, Any] = {
            "model": self.model_name or "auto",
            "messages": [
                {"role": "system", "content": SUMMARY_PROMPT},
                {"role": "user", "content": _transcript(middle, max_chars=max(2000, target * 2))},
            ],
            "max_tokens": min(400, max(96, target // 4)),
            "temperature": 0,
        }
        try:
            result = await self.model.complete(body)
            text = (result.content or "").strip()
            if text:
                return text[: max(400, target)]
        except Exception as exc:  # the summary is best-effort; the run must go on
            log.warning("compaction summary failed: %s", exc)
        fallback = _transcript(middle, max_chars=min(1200, max(300, target)))
        return "(summary unavailable) Earlier steps, newest last:\n" + fallback


def _transcript(messages: list[Message], *, max_chars: int) -> str:
    lines = []
    for m in messages:
        role, content = m.get("role"), str(m.get("content") or "")
        if m.get("tool_calls"):
            fn = m["tool_calls"][0].get("function", {})
            lines.append(f"assistant called {fn.get('name')}({str(fn.get('arguments'))[:200]})")
        elif role == "tool":
            lines.append(f"result: {content[:300]}")
        elif content.startswith(SUMMARY_HEADER):
            lines.append(content[len(SUMMARY_HEADER) :][:1500])  # an earlier summary, re-summarised
        else:
            lines.append(f"{role}: {content[:500]}")
    text = "\n".join(lines)
    if len(text) > max_chars:
        text = "...\n" + text[-max_chars:]
    return text
