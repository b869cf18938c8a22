"""The permission gate (policy + hooks) and its adapters to the agent loop's seams.

:class:`PermissionGate` is the engine: it runs PreToolUse hooks, evaluates the
policy on the (possibly rewritten) arguments and combines the two. A hook may
deny or ask, or allow what only the mode would have asked about; a hook's allow
never overrides a deny or ask rule, the guard list, or plan mode.

:class:`LoopGate` and :class:`ClaudeLoopHooks` implement the loop's ``Gate``
and ``LoopHooks`` seams on top of it, reporting every non-blocking hook
problem as an ``error`` event (``kind: "hook"``) instead of failing the run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..types import ConfigError
from .hooks import HookContext, HookOutcome, HookResult, HookRunner
from .permissions import Decision, PermissionPolicy
from .seams import GateResult, HookVerdict, LoopHooks

if TYPE_CHECKING:
    from ..tools.registry import ToolOutcome
    from .loop import AgentLoop, RunResult

__all__ = [
    "ClaudeLoopHooks",
    "GateCheck",
    "LoopGate",
    "PermissionGate",
    "load_claude_settings",
]


@dataclass(slots=True)
class GateCheck:
    """The gate's verdict on one action and what the hooks added."""

    decision: Decision
    args: dict[str, Any]  # possibly rewritten by a hook's updatedInput
    additional_context: list[str] = field(default_factory=list)
    system_messages: list[str] = field(default_factory=list)
    stop_run: bool = False
    stop_reason: str | None = None
    hooks: list[HookOutcome] = field(default_factory=list)  # errors are reported, not fatal


class PermissionGate:
    """Policy + PreToolUse hooks, for every action, whatever produced it."""

    def __init__(self, policy: PermissionPolicy, hooks: HookRunner | None = None):
        self.policy = policy
        self.hooks = hooks

    async def check(
        self, tool: str, args: Mapping[str, Any], *, context: HookContext, tool_use_id: str = ""
    ) -> GateCheck:
        args = dict(args) if isinstance(args, Mapping) else {}
        hook: HookResult | None = None
        if self.hooks is not None and self.hooks.has("PreToolUse"):
            hook = await self.hooks.pre_tool_use(tool, args, context, tool_use_id=tool_use_id)
            if hook.updated_args is not None:
                args = hook.updated_args
        decision = self.policy.evaluate(tool, args)
        result = GateCheck(decision, args)
        if hook is None:
            return result
        result.hooks = hook.outcomes
        result.additional_context = hook.additional_context
        result.system_messages = hook.system_messages
        result.decision = combine_with_hook(decision, hook)
        if hook.stop:
            result.stop_run, result.stop_reason = True, hook.stop_reason or "stopped by a hook"
            result.decision = Decision("deny", "hook", f"run stopped by hook: {result.stop_reason}")
        return result


def combine_with_hook(policy: Decision, hook: HookResult) -> Decision:
    """Deny > ask > allow, and a hook's allow only lifts the mode's ask."""
    said, reason = hook.permission_decision, hook.reason or ""
    if said == "deny":
        return Decision("deny", "hook", reason or "denied by a PreToolUse hook")
    if policy.decision == "deny":
        return policy
    if said == "ask":
        return Decision("ask", "hook", reason or "a PreToolUse hook asks for approval")
    if said == "allow" and policy.decision == "ask" and policy.by == "mode":
        return Decision("allow", "hook", reason or "allowed by a PreToolUse hook")
    return policy


# --------------------------------------------------------------------------- loop seams


def hook_context(loop: AgentLoop) -> HookContext:
    spec = loop.spec
    return HookContext(spec.session_id, Path(spec.workspace), spec.permission_mode)


def report(loop: AgentLoop, outcomes: list[HookOutcome]) -> None:
    """Non-blocking hook problems become ``error`` events; the run goes on."""
    for o in outcomes:
        if o.error:
            loop.emit("error", message=f"hook {o.hook_id} ({o.event}): {o.error}", kind="hook")


def _joined(parts: list[str]) -> str | None:
    return "\n".join(p for p in parts if p) or None


class LoopGate:
    """The loop's ``Gate`` seam over a :class:`PermissionGate`."""

    def __init__(self, gate: PermissionGate):
        self.gate = gate

    @property
    def policy(self) -> PermissionPolicy:
        return self.gate.policy

    async def check(
        self, loop: AgentLoop, tool: str, args: dict[str, Any], *, call_id: str = ""
    ) -> GateResult:
        res = await self.gate.check(tool, args, context=hook_context(loop), tool_use_id=call_id)
        report(loop, res.hooks)
        d = res.decision
        # The event contract's deciders are rule / mode / hook / user / default: the built-in
        # guard list is a set of rules (its reason starts with "guard:").
        by = "rule" if d.by == "guard" else d.by
        return GateResult(
            d.decision,
            by,
            d.reason,
            args=res.args if res.args != args else None,
            additional_context=_joined(res.additional_context + res.system_messages),
            stop=res.stop_run,
        )


class ClaudeLoopHooks(LoopHooks):
    """The loop's ``LoopHooks`` seam over a :class:`HookRunner` (Claude Code's events)."""

    def __init__(self, runner: HookRunner):
        self.runner = runner
        self._stop_blocked: set[str] = set()  # runs a Stop hook already kept going

    async def _run(self, loop: AgentLoop, event: str, **kw: Any) -> HookResult:
        result = await self.runner.run(event, hook_context(loop), **kw)
        report(loop, result.outcomes)
        return result

    @staticmethod
    def _verdict(r: HookResult) -> HookVerdict:
        reason = r.block_reason or r.stop_reason or ""
        return HookVerdict(r.blocked, reason, _joined(r.additional_context), r.stop)

    async def user_prompt_submit(self, loop: AgentLoop, prompt: str) -> HookVerdict:
        return self._verdict(await self._run(loop, "UserPromptSubmit", prompt=prompt))

    async def post_tool(
        self, loop: AgentLoop, tool: str, args: dict[str, Any], outcome: ToolOutcome
    ) -> HookVerdict:
        r = await self.runner.post_tool_use(
            tool, args, hook_context(loop), ok=outcome.ok, output=outcome.output,
            error=outcome.error,
        )  # fmt: skip
        report(loop, r.outcomes)
        return self._verdict(r)

    async def stop(self, loop: AgentLoop, answer: str) -> HookVerdict:
        run_id = loop.spec.run_id
        event = "SubagentStop" if loop.spec.parent_run_id else "Stop"
        r = await self._run(
            loop, event, stop_hook_active=run_id in self._stop_blocked,
            last_assistant_message=answer,
        )  # fmt: skip
        if r.blocked:
            self._stop_blocked.add(run_id)
        return self._verdict(r)

    async def pre_compact(self, loop: AgentLoop) -> None:
        await self._run(loop, "PreCompact", match=["auto"], trigger="auto", custom_instructions="")

    async def session_end(self, loop: AgentLoop, result: RunResult) -> None:
        self._stop_blocked.discard(loop.spec.run_id)
        await self._run(loop, "SessionEnd", match=[result.status], reason=result.status)

    async def session_start(self, loop: AgentLoop, source: str = "startup") -> HookVerdict:
        """Not part of ``LoopHooks`` yet: SessionStart (``source``: startup / resume)."""
        return self._verdict(await self._run(loop, "SessionStart", match=[source], source=source))

    async def subagent_start(self, loop: AgentLoop, agent_id: str, agent_type: str) -> None:
        """Not part of ``LoopHooks`` yet: call when a child run starts."""
        await self._run(
            loop, "SubagentStart", match=[agent_type], agent_id=agent_id, agent_type=agent_type
        )


# --------------------------------------------------------------------------- settings files


def load_claude_settings(workspace: Path | str) -> dict[str, Any]:
    """``.claude/settings.json`` then ``settings.local.json``: permissions and hooks, merged.

    Missing files are fine; invalid JSON or wrong shapes raise ConfigError naming the file.
    Returns ``{"permissions": {"allow", "ask", "deny"[, "defaultMode"]}, "hooks": {...}}``.
    """
    merged: dict[str, Any] = {"permissions": {"allow": [], "ask": [], "deny": []}, "hooks": {}}
    for name in ("settings.json", "settings.local.json"):
        path = Path(workspace) / ".claude" / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", file=str(path)) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON: {exc}", file=str(path)) from None
        if not isinstance(data, dict):
            raise ConfigError("expected a JSON object", file=str(path))
        _merge_settings(merged, data, str(path))
    return merged


def _merge_settings(merged: dict[str, Any], data: dict[str, Any], path: str) -> None:
    perms = data.get("permissions", {})
    if not isinstance(perms, dict):
        raise ConfigError("'permissions' must be an object", file=path, key="permissions")
    for key in ("allow", "ask", "deny"):
        rules = perms.get(key) or []
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise ConfigError("must be a list of rule strings", file=path, key=f"permissions.{key}")
        target = merged["permissions"][key]
        target.extend(r for r in rules if r not in target)
    if isinstance(perms.get("defaultMode"), str):
        merged["permissions"]["defaultMode"] = perms["defaultMode"]
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise ConfigError("'hooks' must be an object", file=path, key="hooks")
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            raise ConfigError("must be a list of matcher groups", file=path, key=f"hooks.{event}")
        merged["hooks"].setdefault(event, []).extend(groups)
