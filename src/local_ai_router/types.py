"""Core value types shared by the gateway and the agent, and the exception tree.

Messages stay plain OpenAI chat dicts (``{"role": ..., "content": ...}``): that is
what backends speak, what sessions store and what clients send, so converting
them into classes would only add copies. Everything else is a dataclass.

Exception tree::

    LarError
    ├── ConfigError                 bad config file / env (file, key, problem)
    ├── BackendError                talking to a model server failed
    │   ├── BackendUnavailable      connection refused, timeout, DNS
    │   ├── BackendHTTPError        the server answered 4xx/5xx (status, body)
    │   │   └── ContextLengthError  the server rejected the prompt as too long
    │   └── BackendProtocolError    the answer was not valid OpenAI JSON / SSE
    ├── RoutingError                the gateway could not place a request
    │   ├── UnknownModelError       no backend serves that model or alias (404)
    │   ├── UnknownBackendError     X-Backend names no backend (400)
    │   ├── NoHealthyBackendError   every candidate is down, drained or busy (503)
    │   ├── QueueFullError          bounded queue full or timed out (429)
    │   └── ContextTooLargeError    prompt + max_tokens fits no backend (400)
    ├── AgentError                  raised inside an agent run
    │   ├── FormatError             the model's reply held an invalid action
    │   ├── ToolError               a tool failed; the message goes to the model
    │   │   └── WorkspaceViolation  a path escaped the workspace
    │   └── RunCancelled            the run was cancelled
    └── StoreError                  persistence failed
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Action",
    "AgentError",
    "BackendError",
    "BackendHTTPError",
    "BackendProtocolError",
    "BackendUnavailable",
    "ChatResult",
    "ConfigError",
    "ContextLengthError",
    "ContextTooLargeError",
    "Event",
    "FormatError",
    "InvalidAction",
    "LarError",
    "Message",
    "NoHealthyBackendError",
    "ParsedReply",
    "QueueFullError",
    "RoutingError",
    "RunCancelled",
    "StoreError",
    "ToolCall",
    "ToolError",
    "UnknownBackendError",
    "UnknownModelError",
    "Usage",
    "WorkspaceViolation",
]

Message = dict[str, Any]
"""One chat message in OpenAI's format."""


# --------------------------------------------------------------------------- values


def _count(value: Any) -> int:
    """A token count from a server, which may send null, floats or garbage."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float) and value >= 0:
        return int(value)
    return 0


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_openai(cls, data: dict[str, Any] | None) -> Usage:
        if not isinstance(data, dict):
            return cls()
        return cls(
            prompt_tokens=_count(data.get("prompt_tokens")),
            completion_tokens=_count(data.get("completion_tokens")),
        )


@dataclass(slots=True)
class ToolCall:
    """A structured tool call as a server returned it (arguments still raw)."""

    id: str
    name: str
    arguments: str | dict[str, Any] | None


@dataclass(slots=True)
class ChatResult:
    """One non-streamed assistant reply, normalised from the server's JSON."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    reasoning: str | None = None


@dataclass(slots=True)
class Action:
    """The single action the host will run this turn."""

    tool: str
    args: dict[str, Any]
    call_id: str
    source: Literal["native", "text"] = "native"


@dataclass(slots=True)
class InvalidAction:
    """The model tried to act but the action cannot be run.

    ``kind`` is one of ``unknown_tool``, ``bad_json``. The message is written for
    the model: it names the problem so it can correct itself next turn.
    """

    kind: str
    message: str
    tool: str | None = None
    call_id: str | None = None
    source: Literal["native", "text"] = "text"


@dataclass(slots=True)
class ParsedReply:
    """What the action parser made of one assistant reply.

    Exactly one of ``action`` / ``invalid`` is set when the model tried to act;
    neither when the reply is a plain message (``text``).
    """

    text: str
    action: Action | None = None
    invalid: InvalidAction | None = None
    thinking: str | None = None


@dataclass(slots=True)
class Event:
    """One event of an agent run (the contract's event table)."""

    type: str
    run_id: str
    session_id: str
    seq: int
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
    parent_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "run_id": self.run_id,
            "session_id": self.session_id,
            "seq": self.seq,
            "ts": self.ts,
        }
        if self.parent_run_id is not None:
            out["parent_run_id"] = self.parent_run_id
        out.update(self.data)
        return out


# --------------------------------------------------------------------------- errors


class LarError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(LarError):
    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.problem = message
        where = ", ".join(p for p in (file and f"file {file}", key and f"key {key!r}") if p)
        super().__init__(
            f"config error ({where}): {message}" if where else f"config error: {message}"
        )


class BackendError(LarError):
    def __init__(self, message: str, *, backend: str | None = None):
        self.backend = backend
        super().__init__(message)


class BackendUnavailable(BackendError):
    """The server could not be reached (connection refused, timeout)."""


class BackendHTTPError(BackendError):
    def __init__(self, message: str, *, status: int, body: str = "", backend: str | None = None):
        self.status = status
        self.body = body
        super().__init__(message, backend=backend)


class ContextLengthError(BackendHTTPError):
    """The server said the prompt does not fit its context window."""


class BackendProtocolError(BackendError):
    """The server's answer was not the OpenAI shape we expected."""


class RoutingError(LarError):
    status_code = 503
    code = "routing_error"


class UnknownModelError(RoutingError):
    status_code = 404
    code = "model_not_found"


class UnknownBackendError(RoutingError):
    status_code = 400
    code = "backend_not_found"


class NoHealthyBackendError(RoutingError):
    status_code = 503
    code = "no_healthy_backend"


class QueueFullError(RoutingError):
    status_code = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 1):
        self.retry_after = retry_after
        super().__init__(message)


class ContextTooLargeError(RoutingError):
    status_code = 400
    code = "context_length_exceeded"


class AgentError(LarError):
    pass


class FormatError(AgentError):
    """The model's reply could not become a valid action; the message goes back to it."""


class ToolError(AgentError):
    """A tool failed in a way the model should hear about (bad path, bad args, ...)."""


class WorkspaceViolation(ToolError):
    """A path resolved outside the workspace."""


class RunCancelled(AgentError):
    pass


class StoreError(LarError):
    pass
