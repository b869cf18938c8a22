"""The loop's seams: where it meets models, the permission gate, hooks, storage, compaction.

Each seam is a small protocol with a do-nothing or safe default, so the loop
runs in a unit test with fakes and in the server with the real parts.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..types import ChatResult, Message

if TYPE_CHECKING:
    from ..tools.registry import ToolOutcome
    from .loop import AgentLoop, RunResult

__all__ = [
    "AllowAll",
    "Approver",
    "Compactor",
    "Gate",
    "GateResult",
    "HookVerdict",
    "LoopHooks",
    "ModelClient",
    "ModelInfo",
    "NoCompaction",
    "Recorder",
    "deny_approver",
]


@dataclass
class ModelInfo:
    """What the loop needs to know about the model a run will use."""

    model: str
    backend: str | None = None
    tool_mode: str = "native"  # the mode ``auto`` resolves to for this backend
    context_window: int | None = None


class ModelClient(Protocol):
    """``stream(body, on_text) -> ChatResult`` is optional: used when a run streams."""

    async def resolve(self, model: str) -> ModelInfo: ...
    async def complete(self, body: dict[str, Any]) -> ChatResult: ...


@dataclass
class GateResult:
    decision: str  # allow / deny / ask
    by: str  # rule / mode / hook / user / default / guard
    reason: str = ""
    args: dict[str, Any] | None = None  # updated input from a hook
    additional_context: str | None = None
    stop: bool = False  # a hook said continue: false


class Gate(Protocol):
    async def check(
        self, loop: AgentLoop, tool: str, args: dict[str, Any], *, call_id: str = ""
    ) -> GateResult: ...


class AllowAll:
    """The gate of a library user who wants none (every action is still routed through it)."""

    async def check(
        self, loop: AgentLoop, tool: str, args: dict[str, Any], *, call_id: str = ""
    ) -> GateResult:
        return GateResult("allow", "default", "no permission policy configured")


class Approver(Protocol):
    async def __call__(
        self, loop: AgentLoop, request_id: str, tool: str, args: dict[str, Any], verdict: GateResult
    ) -> GateResult: ...


async def deny_approver(
    loop: AgentLoop, request_id: str, tool: str, args: dict[str, Any], verdict: GateResult
) -> GateResult:
    """Nobody can answer (no terminal, non-streaming HTTP): an ask becomes a deny."""
    return GateResult("deny", "default", f"{verdict.reason} (asked, but nobody can answer here)")


@dataclass
class HookVerdict:
    block: bool = False
    reason: str = ""
    additional_context: str | None = None
    stop: bool = False


class LoopHooks:
    """Lifecycle hooks around a run; the default does nothing."""

    async def session_start(self, loop: AgentLoop, source: str = "startup") -> HookVerdict:
        return HookVerdict()

    async def user_prompt_submit(self, loop: AgentLoop, prompt: str) -> HookVerdict:
        return HookVerdict()

    async def post_tool(
        self, loop: AgentLoop, tool: str, args: dict[str, Any], outcome: ToolOutcome
    ) -> HookVerdict:
        return HookVerdict()

    async def stop(self, loop: AgentLoop, answer: str) -> HookVerdict:
        return HookVerdict()

    async def pre_compact(self, loop: AgentLoop) -> None:
        return None

    async def session_end(self, loop: AgentLoop, result: RunResult) -> None:
        return None


class Recorder(Protocol):
    def add_record(self, loop: AgentLoop, step: int, kind: str, **fields: Any) -> None: ...
    def commit_step(
        self,
        loop: AgentLoop,
        step: int,
        new_messages: list[Message],
        first_seq: int,
        replace_all: bool = False,
    ) -> Awaitable[None]:
        """Snapshot the step now (synchronously); return the write for the loop to await."""
        ...

    async def audit(
        self,
        loop: AgentLoop,
        tool: str,
        args: dict[str, Any],
        verdict: GateResult,
        request_id: str | None,
    ) -> None: ...
    async def finish(self, loop: AgentLoop, result: RunResult) -> None: ...


class Compactor(Protocol):
    async def fit(
        self, loop: AgentLoop, messages: list[Message], *, harder: bool
    ) -> list[Message]: ...


class NoCompaction:
    async def fit(self, loop: AgentLoop, messages: list[Message], *, harder: bool) -> list[Message]:
        return messages
