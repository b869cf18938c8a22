"""Lifecycle hooks, compatible with Claude Code's hooks.

Configuration is Claude Code's settings.json ``hooks`` shape::

    {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "...",
                                                  "timeout": 30}]}]}

A hook is a shell command (event JSON on stdin), an HTTP endpoint (event JSON
POSTed) or a Python callable registered by a library user; all three answer the
same way. Commands get Claude Code's payload (``tool_name: "Bash"``,
``tool_input.command``, absolute ``tool_input.file_path``...; mapped in
:mod:`.claude_shapes`) so scripts written for Claude Code run unchanged. Exit 0 =
success (stdout read as JSON when it starts with ``{``), exit 2 = block (stderr is
the reason given to the model), anything else = a non-blocking error that is
reported, never raised. Matching hooks run in parallel; when they disagree
deny > ask > allow.

Hooks run with the workspace as cwd, ``CLAUDE_PROJECT_DIR`` set, secrets
scrubbed from the environment, in their own process group, which is killed
whole on timeout (default 60 s) or cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2

from ..tools.registry import scrubbed_env
from .claude_shapes import claude_tool_name, from_claude_input, to_claude_input

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "HOOK_EVENTS",
    "HookCallable",
    "HookContext",
    "HookOutcome",
    "HookResult",
    "HookRunner",
    "claude_tool_name",
    "from_claude_input",
    "to_claude_input",
]

HOOK_EVENTS = (
    "PreToolUse", "PostToolUse", "PostToolUseFailure", "UserPromptSubmit", "Stop",
    "SubagentStart", "SubagentStop", "PreCompact", "SessionStart", "SessionEnd",
)  # fmt: skip
# Valid in Claude Code but never fired here: accepted (so users' settings load) and reported.
_CLAUDE_ONLY_EVENTS = frozenset(
    [
        "Notification",
        "PermissionRequest",
        "PermissionDenied",
        "PostCompact",
        "StopFailure",
        "TaskCreated",
        "TaskCompleted",
        "ConfigChange",
        "Elicitation",
        "ElicitationResult",
        "WorktreeCreate",
        "WorktreeRemove",
        "TeammateIdle",
        "CwdChanged",
        "FileChanged",
        "InstructionsLoaded",
        "Setup",
    ]
)
DEFAULT_TIMEOUT_S = 60.0
_PLAIN_CONTEXT_EVENTS = ("UserPromptSubmit", "SessionStart")  # plain stdout becomes context
_MAX_OUTPUT = 64_000
_DECISION_RANK = {"allow": 0, "ask": 1, "deny": 2}

HookCallable = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None] | dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class HookContext:
    """Who is running: the fields every hook payload carries."""

    session_id: str
    cwd: Path
    permission_mode: str = "auto"
    transcript_path: str | None = None


@dataclass(slots=True)
class HookOutcome:
    """One hook's run, for events and audit."""

    hook_id: str
    event: str
    exit_code: int | None = None
    error: str | None = None  # a non-blocking problem (timeout, crash, bad output)
    blocked: bool = False
    decision: str | None = None
    output: str = ""


@dataclass(slots=True)
class HookResult:
    """The combined answer of every hook that matched one event."""

    event: str
    outcomes: list[HookOutcome] = field(default_factory=list)
    permission_decision: Literal["allow", "deny", "ask"] | None = None
    reason: str | None = None
    blocked: bool = False  # exit 2 or ``decision: "block"``
    block_reason: str | None = None
    updated_input: dict[str, Any] | None = None  # as the hook wrote it (Claude Code's names)
    updated_args: dict[str, Any] | None = None  # the same, in our tool's argument names
    additional_context: list[str] = field(default_factory=list)
    system_messages: list[str] = field(default_factory=list)
    stop: bool = False
    stop_reason: str | None = None

    @property
    def errors(self) -> list[HookOutcome]:
        return [o for o in self.outcomes if o.error]


@dataclass(frozen=True, slots=True)
class _Hook:
    id: str
    type: Literal["command", "http", "python"]
    timeout: float
    command: str = ""
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    allowed_env: tuple[str, ...] = ()
    fn: HookCallable | None = None


@dataclass(frozen=True, slots=True)
class _Matcher:
    text: str
    names: frozenset[str] | None = None
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, value: object, where: str) -> _Matcher:
        if value is None or value in ("", "*"):
            return cls("*")
        if not isinstance(value, str):
            raise ValueError(f"{where}.matcher must be a string, got {type(value).__name__}")
        if re.fullmatch(r"[A-Za-z0-9_|]+", value):
            return cls(value, frozenset(n for n in value.split("|") if n))
        try:
            return cls(value, regex=re.compile(value))
        except re.error as exc:
            raise ValueError(f"{where}.matcher {value!r} is not a valid regex: {exc}") from None

    def matches(self, values: Sequence[str] | None) -> bool:
        if self.text == "*" or values is None:
            return True
        if self.names is not None:
            return any(v in self.names for v in values)
        return any(self.regex.search(v) for v in values) if self.regex else False


# --------------------------------------------------------------------------- runner


class HookRunner:
    """Runs the hooks configured for an event and combines their answers."""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        workspace: Path | str,
        env: Mapping[str, str] | None = None,
        default_timeout: float = DEFAULT_TIMEOUT_S,
    ):
        self.workspace = Path(workspace)
        self.default_timeout = default_timeout
        self._env = scrubbed_env(env)
        self.warnings: list[str] = []  # events / hook types accepted but never run here
        self._groups: dict[str, list[tuple[_Matcher, list[_Hook]]]] = {e: [] for e in HOOK_EVENTS}
        self._load(config or {})

    # ----------------------------------------------------------------- configuration

    def _load(self, config: Mapping[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise ValueError("hooks must map event names to lists of {matcher, hooks} groups")
        for event, groups in config.items():
            if event in _CLAUDE_ONLY_EVENTS:
                self.warnings.append(
                    f"hooks.{event}: event not supported here; its hooks never run"
                )
                continue
            if event not in HOOK_EVENTS:
                raise ValueError(f"unknown hook event {event!r}; known: {', '.join(HOOK_EVENTS)}")
            if not isinstance(groups, list):
                raise ValueError(f"hooks.{event} must be a list of {{matcher, hooks}} groups")
            for gi, group in enumerate(groups):
                where = f"hooks.{event}[{gi}]"
                if not isinstance(group, Mapping) or not isinstance(group.get("hooks"), list):
                    raise ValueError(f"{where} must be an object with a 'hooks' list")
                matcher = _Matcher.parse(group.get("matcher"), where)
                hooks = [self._hook(h, f"{where}.hooks[{hi}]") for hi, h in
                         enumerate(group["hooks"])]  # fmt: skip
                self._groups[event].append((matcher, [h for h in hooks if h is not None]))

    def _hook(self, spec: object, where: str) -> _Hook | None:
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must be an object")
        kind = spec.get("type", "command")
        timeout = spec.get("timeout", self.default_timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"{where}.timeout must be a positive number of seconds")
        if kind == "command":
            command = spec.get("command")
            if not isinstance(command, str) or not command.strip():
                raise ValueError(f"{where}.command must be a non-empty string")
            return _Hook(f"{where} command: {command[:60]}", "command", float(timeout), command)
        if kind == "http":
            url, headers = spec.get("url"), spec.get("headers") or {}
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"{where}.url must be an http(s) URL")
            if not isinstance(headers, Mapping) or not all(
                isinstance(v, str) for v in headers.values()
            ):
                raise ValueError(f"{where}.headers must map names to strings")
            allowed = tuple(str(n) for n in spec.get("allowedEnvVars") or ())
            return _Hook(f"{where} http: {url}", "http", float(timeout), url=url,
                         headers=tuple(headers.items()), allowed_env=allowed)  # fmt: skip
        if kind in ("prompt", "agent"):
            self.warnings.append(f"{where}: hook type {kind!r} is not supported here; skipped")
            return None
        raise ValueError(f"{where}.type must be 'command' or 'http', got {kind!r}")

    def register(
        self, event: str, fn: HookCallable, *, matcher: str = "*", timeout: float | None = None
    ) -> None:
        """Add a Python hook: ``async def fn(payload: dict) -> dict | None``."""
        if event not in HOOK_EVENTS:
            raise ValueError(f"unknown hook event {event!r}; known: {', '.join(HOOK_EVENTS)}")
        if not callable(fn):
            raise ValueError("a hook must be callable")
        name = getattr(fn, "__qualname__", repr(fn))
        hook = _Hook(f"{event} python: {name}", "python", timeout or self.default_timeout, fn=fn)
        self._groups[event].append((_Matcher.parse(matcher, f"{event} python hook"), [hook]))

    def has(self, event: str) -> bool:
        return any(hooks for _, hooks in self._groups.get(event, []))

    # ----------------------------------------------------------------- running

    async def run(
        self,
        event: str,
        context: HookContext,
        *,
        match: Sequence[str] | None = None,
        **fields: Any,
    ) -> HookResult:
        """Run every hook of ``event`` whose matcher accepts one of ``match`` (None: all)."""
        if event not in HOOK_EVENTS:
            raise ValueError(f"unknown hook event {event!r}")
        hooks = [h for m, hs in self._groups[event] if m.matches(match) for h in hs]
        result = HookResult(event)
        if not hooks:
            return result
        payload = {
            "session_id": context.session_id,
            "transcript_path": context.transcript_path,
            "cwd": str(context.cwd),
            "permission_mode": "default" if context.permission_mode == "ask"
            else context.permission_mode,
            "hook_event_name": event,
            **fields,
        }  # fmt: skip
        answers = await asyncio.gather(*(self._run_one(h, event, payload) for h in hooks))
        for outcome, answer in answers:
            result.outcomes.append(outcome)
            _apply(result, event, outcome, answer)
        return result

    async def pre_tool_use(
        self, tool: str, args: Mapping[str, Any], context: HookContext, *, tool_use_id: str = ""
    ) -> HookResult:
        result = await self.run(
            "PreToolUse", context, match=_names(tool, args), tool_name=claude_tool_name(tool, args),
            tool_input=to_claude_input(tool, args, self.workspace), tool_use_id=tool_use_id,
        )  # fmt: skip
        if result.updated_input is not None:
            result.updated_args = from_claude_input(
                tool, result.updated_input, args, self.workspace
            )
        return result

    async def post_tool_use(
        self,
        tool: str,
        args: Mapping[str, Any],
        context: HookContext,
        *,
        ok: bool,
        output: str,
        error: str | None = None,
        tool_use_id: str = "",
    ) -> HookResult:
        """PostToolUse (or PostToolUseFailure when ``ok`` is False)."""
        fields: dict[str, Any] = {
            "tool_name": claude_tool_name(tool, args),
            "tool_input": to_claude_input(tool, args, self.workspace),
            "tool_use_id": tool_use_id,
        }
        if ok:
            response: dict[str, Any] = {"output": output, "success": True}
            if tool == "run_shell":
                response = {"stdout": output, "stderr": "", "interrupted": False}
            elif "file_path" in fields["tool_input"]:
                response["filePath"] = fields["tool_input"]["file_path"]
            fields["tool_response"] = response
            return await self.run("PostToolUse", context, match=_names(tool, args), **fields)
        fields.update(error=error or output, is_interrupt=False)
        return await self.run("PostToolUseFailure", context, match=_names(tool, args), **fields)

    async def _run_one(
        self, hook: _Hook, event: str, payload: dict[str, Any]
    ) -> tuple[HookOutcome, dict[str, Any] | None]:
        outcome = HookOutcome(hook.id, event)
        try:
            if hook.type == "command":
                answer = await self._command(hook, payload, outcome)
            elif hook.type == "http":
                answer = await self._http(hook, payload, outcome)
            else:
                answer = await self._python(hook, payload, outcome)
        except Exception as exc:  # a hook must never crash the run
            outcome.error = f"hook failed: {type(exc).__name__}: {exc}"
            return outcome, None
        return outcome, answer

    async def _command(
        self, hook: _Hook, payload: dict[str, Any], outcome: HookOutcome
    ) -> dict[str, Any] | None:
        env = {**self._env, "CLAUDE_PROJECT_DIR": str(self.workspace)}
        try:
            proc = await asyncio.create_subprocess_shell(
                hook.command, cwd=self.workspace, env=env, start_new_session=True,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            outcome.error = f"could not start: {exc}"
            return None
        data = json.dumps(payload, default=str).encode()  # odd argument values still go
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), hook.timeout)
        except TimeoutError:
            await _kill_group(proc)
            outcome.error = f"timed out after {hook.timeout:g}s; its process group was killed"
            return None
        except asyncio.CancelledError:
            await _kill_group(proc)
            raise
        outcome.exit_code = proc.returncode
        stdout = out[:_MAX_OUTPUT].decode("utf-8", "replace").strip()
        stderr = err[:_MAX_OUTPUT].decode("utf-8", "replace").strip()
        if proc.returncode == 2:
            outcome.blocked = True
            outcome.output = stderr or f"blocked by hook {hook.id}"
            return None
        if proc.returncode != 0:
            outcome.error = f"exit code {proc.returncode}" + (f": {stderr[:500]}" if stderr else "")
            return None
        return _parse_output(stdout, outcome)

    async def _http(
        self, hook: _Hook, payload: dict[str, Any], outcome: HookOutcome
    ) -> dict[str, Any] | None:
        headers = {k: _expand_env(v, hook.allowed_env, os.environ).strip() for k, v in hook.headers}
        try:
            async with httpx2.AsyncClient(timeout=hook.timeout) as client:
                resp = await client.post(hook.url, json=payload, headers=headers)
        except httpx2.TimeoutException:
            outcome.error = f"timed out after {hook.timeout:g}s"
            return None
        except httpx2.HTTPError as exc:
            outcome.error = f"HTTP request failed: {type(exc).__name__}: {exc}"
            return None
        outcome.exit_code = resp.status_code
        if not 200 <= resp.status_code < 300:
            outcome.error = f"HTTP {resp.status_code}: {resp.text[:300]}"
            return None
        return _parse_output(resp.text[:_MAX_OUTPUT].strip(), outcome)

    async def _python(
        self, hook: _Hook, payload: dict[str, Any], outcome: HookOutcome
    ) -> dict[str, Any] | None:
        assert hook.fn is not None
        answer = hook.fn(dict(payload))
        if inspect.isawaitable(answer):
            try:
                answer = await asyncio.wait_for(answer, hook.timeout)
            except TimeoutError:
                outcome.error = f"timed out after {hook.timeout:g}s"
                return None
        if answer is not None and not isinstance(answer, dict):
            outcome.error = f"returned {type(answer).__name__}; expected a dict or None"
            return None
        outcome.exit_code = 0
        return answer


def _names(tool: str, args: Mapping[str, Any]) -> list[str]:
    names = [tool, claude_tool_name(tool, args)]
    return [*names, "Agent"] if tool == "spawn_agents" else names


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError, ProcessLookupError):
        await asyncio.wait_for(proc.wait(), 5)


def _expand_env(value: str, allowed: Sequence[str], environ: Mapping[str, str]) -> str:
    """``$VAR`` / ``${VAR}`` in header values, only for names the hook lists."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return environ.get(name, "") if name in allowed else ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, value)


def _parse_output(text: str, outcome: HookOutcome) -> dict[str, Any] | None:
    if not text.startswith("{"):
        outcome.output = text[:2000]
        return None
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as exc:
        outcome.error = f"output starts with '{{' but is not valid JSON: {exc}"
        return None
    if not isinstance(answer, dict):
        outcome.error = "JSON output must be an object"
        return None
    return answer


def _apply(result: HookResult, event: str, outcome: HookOutcome, answer: dict | None) -> None:
    """Fold one hook's answer into the combined result (deny > ask > allow)."""
    if outcome.blocked:
        _block(result, event, outcome, outcome.output)
        return
    if answer is None:
        if outcome.output and event in _PLAIN_CONTEXT_EVENTS and not outcome.error:
            result.additional_context.append(outcome.output)
        return
    problems: list[str] = []
    if answer.get("continue") is False:
        result.stop = True
        result.stop_reason = result.stop_reason or _str(answer.get("stopReason"))
    if isinstance(message := answer.get("systemMessage"), str):
        result.system_messages.append(message)
    legacy = answer.get("decision")
    if legacy == "block":
        _block(
            result, event, outcome, _str(answer.get("reason")) or f"blocked by {outcome.hook_id}"
        )
    elif legacy in ("approve", "allow") and event == "PreToolUse":
        _decide(result, outcome, "allow", _str(answer.get("reason")))
    elif legacy is not None:
        problems.append(f"unknown decision {legacy!r}")
    specific = answer.get("hookSpecificOutput")
    if isinstance(specific, dict):
        problems += _apply_specific(result, outcome, specific)
    elif specific is not None:
        problems.append("hookSpecificOutput must be an object")
    if problems:
        outcome.error = "; ".join(problems)


def _apply_specific(result: HookResult, outcome: HookOutcome, spec: dict[str, Any]) -> list[str]:
    problems = []
    decision = spec.get("permissionDecision")
    if decision in _DECISION_RANK:
        _decide(result, outcome, decision, _str(spec.get("permissionDecisionReason")))
    elif decision is not None:
        problems.append(f"permissionDecision must be allow, deny or ask, got {decision!r}")
    updated = spec.get("updatedInput")
    if isinstance(updated, dict):
        result.updated_input = updated
    elif updated is not None:
        problems.append("updatedInput must be an object")
    if isinstance(context := spec.get("additionalContext"), str) and context:
        result.additional_context.append(context)
    return problems


def _decide(result: HookResult, outcome: HookOutcome, decision: str, reason: str | None) -> None:
    outcome.decision = decision
    current = result.permission_decision
    if current is None or _DECISION_RANK[decision] > _DECISION_RANK[current]:
        result.permission_decision, result.reason = decision, reason  # type: ignore[assignment]
    elif decision == current and reason:
        result.reason = f"{result.reason}; {reason}" if result.reason else reason


def _block(result: HookResult, event: str, outcome: HookOutcome, reason: str) -> None:
    outcome.blocked = True
    result.blocked = True
    result.block_reason = f"{result.block_reason}; {reason}" if result.block_reason else reason
    if event == "PreToolUse":
        _decide(result, outcome, "deny", reason)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
