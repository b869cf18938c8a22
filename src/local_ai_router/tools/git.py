"""Git tools: the ``git`` binary run in the workspace, never interactively, never forced.

Every argument the model supplies is checked before git sees it: nothing may
start with ``-`` (option injection), paths are confined to the workspace and
passed after ``--`` with literal pathspecs (so ``:/`` magic cannot reach the
rest of an enclosing repository), and push/pull only name configured remotes
(not URLs or ``ext::`` transports). ``core.fsmonitor`` and external diff
drivers are switched off so that read-only tools cannot be turned into
command execution through repository config.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..types import ToolError
from .paths import resolve_in_workspace, workspace_root
from .registry import ToolContext, scrubbed_env, tool
from .shell import ProcessResult, run_process

__all__ = [
    "GIT_TIMEOUT",
    "git_add",
    "git_branch",
    "git_checkout",
    "git_commit",
    "git_diff",
    "git_log",
    "git_pull",
    "git_push",
    "git_status",
]

GIT_TIMEOUT = 120
MAX_LOG = 100
_GLOBAL_OPTS = (
    "-c", "core.quotepath=off",
    "-c", "color.ui=false",
    "-c", "core.fsmonitor=false",
    "-c", "core.pager=cat",
    "--no-pager",
    "--literal-pathspecs",
)  # fmt: skip


def _git_env(ctx: ToolContext) -> dict[str, str]:
    env = scrubbed_env(ctx.env)
    env["GIT_TERMINAL_PROMPT"] = "0"  # fail instead of waiting for a password
    env["GIT_PAGER"] = "cat"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


async def _run(ctx: ToolContext, *args: str, stdin: bytes | None = None) -> ProcessResult:
    root = workspace_root(ctx.workspace)
    argv = ["git", "-C", str(root), *_GLOBAL_OPTS, *args]
    try:
        return await run_process(
            argv,
            cwd=root,
            env=_git_env(ctx),
            time_limit=GIT_TIMEOUT,
            stdin=stdin,
            merge_stderr=False,
            limit=max(500, ctx.output_limit - 200),
        )
    except FileNotFoundError:
        raise ToolError("git is not installed on this machine") from None


def _failure(args: tuple[str, ...], res: ProcessResult) -> ToolError:
    if res.timed_out:
        return ToolError(f"git {args[0]} timed out after {GIT_TIMEOUT}s and was stopped")
    detail = res.stderr.strip() or res.stdout.strip() or f"exit code {res.returncode}"
    hint = ""
    if "not a git repository" in detail:
        hint = " (the workspace is not a git repository; run `git init` with run_shell first)"
    return ToolError(f"git {args[0]} failed: {detail}{hint}")


async def _git(ctx: ToolContext, *args: str, stdin: bytes | None = None) -> ProcessResult:
    res = await _run(ctx, *args, stdin=stdin)
    if res.returncode != 0:
        raise _failure(args, res)
    return res


def _both(res: ProcessResult) -> str:
    return "\n".join(p for p in (res.stdout.strip(), res.stderr.strip()) if p)


def _no_option(name: str, value: str) -> str:
    """Refuse anything git could read as an option, and blank or multi-word values."""
    text = value.strip()
    if not text:
        raise ToolError(f"{name} is empty")
    if text.startswith("-"):
        raise ToolError(
            f"{name} {value!r} starts with '-'; git options cannot be passed to the git tools"
        )
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ToolError(f"{name} {value!r} contains whitespace; give a single name")
    return text


def _ref_arg(name: str, value: str) -> str:
    """A remote, branch or refspec for push/pull: no options, no force ('+'), no deletion."""
    text = _no_option(name, value)
    if text.startswith("+") or ":+" in text:
        raise ToolError(f"{name} {value!r} is a forced refspec; force pushes are never allowed")
    if text.startswith(":"):
        raise ToolError(f"{name} {value!r} would delete a remote branch; that is not allowed")
    return text


def _git_path(ctx: ToolContext, path: str) -> str:
    """A workspace-confined path, relative to the workspace, as git should see it."""
    _no_option("path", path)
    real = resolve_in_workspace(ctx.workspace, path)  # raises WorkspaceViolation
    root = workspace_root(ctx.workspace)
    # Prefer the path as written (minus '..'): the resolved one would name a symlink's target.
    lexical = Path(os.path.normpath(root / path.strip()))
    chosen = lexical if lexical.is_relative_to(root) else real
    return os.path.relpath(chosen, root)


async def _current_branch(ctx: ToolContext) -> str:
    res = await _run(ctx, "symbolic-ref", "--quiet", "--short", "HEAD")
    return res.stdout.strip() if res.returncode == 0 else ""


async def _config(ctx: ToolContext, key: str) -> str:
    res = await _run(ctx, "config", "--get", key)
    return res.stdout.strip() if res.returncode == 0 else ""


async def _pick_remote(ctx: ToolContext, remote: str | None, branch: str) -> str:
    """The named remote if configured, else the upstream's remote, 'origin' or the only one."""
    res = await _git(ctx, "remote")
    remotes = res.stdout.split()
    if not remotes:
        raise ToolError(
            "no git remote is configured; add one with run_shell: git remote add origin URL"
        )
    if remote is not None:
        if remote not in remotes:
            raise ToolError(
                f"remote {remote!r} is not configured; configured remotes: {', '.join(remotes)}"
            )
        return remote
    upstream = await _config(ctx, f"branch.{branch}.remote") if branch else ""
    for choice in (upstream, "origin"):
        if choice in remotes:
            return choice
    if len(remotes) == 1:
        return remotes[0]
    raise ToolError(f"several remotes are configured ({', '.join(remotes)}); name one as remote")


# --------------------------------------------------------------------------- read-only


@tool(read_only=True, kind="read")
async def git_status(ctx: ToolContext) -> str:
    """Git status"""
    res = await _git(ctx, "status", "--short", "--branch")
    out = res.stdout.rstrip()
    if len(out.splitlines()) <= 1:
        out += "\nnothing to commit, working tree clean"
    return out


@tool(read_only=True, kind="read")
async def git_diff(ctx: ToolContext, path: str | None = None, staged: bool | None = None) -> str:
    """Git diff"""
    args = ["diff", "--no-ext-diff", "--no-textconv"]
    if staged:
        args.append("--cached")
    if path:
        args += ["--", _git_path(ctx, path)]
    res = await _git(ctx, *args)
    if res.stdout.strip():
        return res.stdout.rstrip()
    if staged:
        return "no staged changes (stage files with git_add)"
    return (
        "no unstaged changes in tracked files "
        "(new files show in git_status; staged=true shows staged changes)"
    )


@tool(read_only=True, kind="read")
async def git_log(ctx: ToolContext, limit: int | None = None) -> str:
    """Git log"""
    n = min(max(1, limit or 10), MAX_LOG)
    res = await _run(ctx, "log", f"--max-count={n}", "--date=short", "--format=%h %ad %an: %s")
    if res.returncode != 0:
        if "does not have any commits" in res.stderr:
            return "no commits yet"
        raise _failure(("log",), res)
    return res.stdout.rstrip() or "no commits yet"


# --------------------------------------------------------------------------- mutating


@tool(kind="other")
async def git_add(ctx: ToolContext, paths: list[str]) -> str:
    """Stage paths"""
    if not paths:
        raise ToolError('paths is empty; give the files to stage, e.g. ["src/app.py"] or ["."]')
    rels = [_git_path(ctx, p) for p in paths]
    await _git(ctx, "add", "--", *rels)
    status = await _git(ctx, "status", "--short")
    return f"staged {len(rels)} path(s). Status now:\n{status.stdout.rstrip() or '(clean)'}"


@tool(kind="other")
async def git_commit(ctx: ToolContext, message: str) -> str:
    """Commit staged changes"""
    if not message.strip():
        raise ToolError("message is empty; describe the change")
    # The message goes through stdin: it can never be read as an option.
    res = await _run(ctx, "commit", "--file=-", stdin=message.encode("utf-8", "replace"))
    if res.returncode != 0:
        err = _failure(("commit",), res)
        if "no changes added" in str(err) or "nothing added" in str(err):
            raise ToolError(f"{err}\n(stage changes with git_add first)") from None
        raise err
    return _both(res)


@tool(kind="other")
async def git_push(ctx: ToolContext, remote: str | None = None, branch: str | None = None) -> str:
    """Push (never forces)"""
    remote = _ref_arg("remote", remote) if remote is not None else None
    branch = _ref_arg("branch", branch) if branch is not None else None
    current = await _current_branch(ctx)
    target = branch or current
    if not target:
        raise ToolError("HEAD is detached; give the branch to push")
    chosen = await _pick_remote(ctx, remote, current)
    args = ["push"]
    if target == current and not await _config(ctx, f"branch.{current}.remote"):
        args.append("--set-upstream")  # so that a later git_pull knows where to pull from
    res = await _git(ctx, *args, chosen, target)
    return _both(res) or f"pushed {target} to {chosen}"


@tool(kind="other")
async def git_pull(ctx: ToolContext, remote: str | None = None, branch: str | None = None) -> str:
    """Pull (fast-forward)"""
    remote = _ref_arg("remote", remote) if remote is not None else None
    branch = _ref_arg("branch", branch) if branch is not None else None
    args = ["pull", "--no-rebase", "--ff-only"]
    if remote is not None or branch is not None:
        args.append(await _pick_remote(ctx, remote, await _current_branch(ctx)))
        if branch is not None:
            args.append(branch)
    res = await _run(ctx, *args)
    if res.returncode != 0:
        err = _failure(("pull",), res)
        if "fast-forward" in str(err).lower():
            raise ToolError(
                f"{err}\n(local and remote have diverged; merge or rebase with run_shell)"
            ) from None
        raise err
    return _both(res)


@tool(kind="other")
async def git_branch(ctx: ToolContext, name: str | None = None) -> str:
    """List or create a branch"""
    if name is None:
        res = await _git(ctx, "branch", "--list")
        return res.stdout.rstrip() or "(no branches yet: make a first commit)"
    branch = _no_option("name", name)
    await _git(ctx, "branch", "--", branch)
    current = await _current_branch(ctx)
    on = current or "a detached HEAD"
    return f"created branch {branch} (still on {on}; switch with git_checkout)"


@tool(kind="other")
async def git_checkout(ctx: ToolContext, branch: str, create: bool | None = None) -> str:
    """Switch branch"""
    name = _no_option("branch", branch)
    # `git switch` only ever changes branches: `git checkout <path>` would discard edits.
    args = ["switch", "--create", name] if create else ["switch", name]
    res = await _git(ctx, *args)
    return _both(res) or f"switched to {name}"
