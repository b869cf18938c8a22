"""Build one run's permission gate, hooks and sandbox from the settings.

Sources, merged in this order: ``agent.permissions`` and ``agent.hooks`` from
the config, then (only with ``agent.load_claude_settings: true``, since a
repository's hooks are commands) the workspace's ``.claude/settings.json`` and
``settings.local.json``.

Files that make the *next* run execute commands (``.mcp.json`` starts servers;
``.claude/settings*.json`` holds hooks) are always behind an ask rule, so a
model in ``auto`` mode cannot plant them: a headless run is refused, a person
is asked, and only ``bypassPermissions`` skips it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import AgentConfig
from ..tools.registry import scrubbed_env
from ..types import ConfigError
from .gate import ClaudeLoopHooks, LoopGate, PermissionGate, load_claude_settings
from .hooks import HookRunner
from .permissions import PermissionPolicy
from .sandbox import bwrap_wrapper, check_bwrap

__all__ = ["PROTECTED_FILE_RULES", "RunPolicy", "build_run_policy", "validate_agent_config"]

PROTECTED_FILE_RULES = (
    "Edit(/.mcp.json)",
    "Edit(/.claude/settings.json)",
    "Edit(/.claude/settings.local.json)",
)


@dataclass
class RunPolicy:
    policy: PermissionPolicy
    runner: HookRunner
    gate: LoopGate
    hooks: ClaudeLoopHooks
    shell_wrapper: Callable[[list[str]], list[str]] | None = None


def _sources(
    cfg: AgentConfig, workspace: Path
) -> tuple[dict[str, list[str]], dict[str, Any], str | None]:
    rules = {k: list(getattr(cfg.permissions, k)) for k in ("allow", "ask", "deny")}
    hooks: dict[str, Any] = {e: list(g) for e, g in cfg.hooks.items()}
    mode = None
    if cfg.load_claude_settings:
        claude = load_claude_settings(workspace)
        for k in rules:
            rules[k] += [r for r in claude["permissions"][k] if r not in rules[k]]
        for event, groups in claude["hooks"].items():
            hooks.setdefault(event, []).extend(groups)
        mode = claude["permissions"].get("defaultMode")
    rules["ask"] += [r for r in PROTECTED_FILE_RULES if r not in rules["ask"]]
    return rules, hooks, mode


def build_run_policy(cfg: AgentConfig, workspace: Path, mode: str | None) -> RunPolicy:
    """Raises ConfigError (with the offending rule or hook) on bad settings."""
    rules, hook_config, settings_mode = _sources(cfg, workspace)
    chosen = mode or settings_mode or cfg.permissions.mode
    try:
        policy = PermissionPolicy(mode=chosen, workspace=workspace, **rules)
    except ValueError as exc:
        raise ConfigError(str(exc), key="agent.permissions") from None
    try:
        runner = HookRunner(hook_config, workspace=workspace, env=scrubbed_env())
    except ValueError as exc:
        raise ConfigError(str(exc), key="agent.hooks") from None
    wrapper = None
    if cfg.sandbox == "bwrap":
        try:
            check_bwrap()
        except Exception as exc:
            raise ConfigError(str(exc), key="agent.sandbox") from None
        wrapper = bwrap_wrapper(workspace, network=cfg.sandbox_network)
    return RunPolicy(
        policy, runner, LoopGate(PermissionGate(policy, runner)), ClaudeLoopHooks(runner), wrapper
    )


def validate_agent_config(cfg: AgentConfig) -> None:
    """Fail at start, not at the first run: parse rules and hooks against the default workspace."""
    ws = Path(cfg.workspace).expanduser()
    build_run_policy(cfg.model_copy(update={"load_claude_settings": False}), ws, None)
