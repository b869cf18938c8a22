"""Git tools against real repositories, with a bare repository as the remote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local_ai_router.tools.git import (
    _git_env,
    git_add,
    git_branch,
    git_checkout,
    git_commit,
    git_diff,
    git_log,
    git_pull,
    git_push,
    git_status,
)
from local_ai_router.tools.registry import Tool, ToolContext
from local_ai_router.types import ToolError, WorkspaceViolation


def _env(home: Path) -> dict[str, str]:
    # A private HOME and no system config: the machine's git settings must not leak in.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LANG": "C",
    }


def sh(cwd: Path, *args: str, env: dict[str, str]) -> str:
    res = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return res.stdout


def init_repo(path: Path, env: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    sh(path, "init", "-q", "-b", "main", env=env)
    sh(path, "config", "user.email", "dev@example.com", env=env)
    sh(path, "config", "user.name", "Dev", env=env)
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return _env(home)


@pytest.fixture
def ws(tmp_path: Path, env: dict[str, str]) -> Path:
    repo = init_repo(tmp_path / "ws", env)
    (repo / "README.md").write_text("hello\n")
    sh(repo, "add", "README.md", env=env)
    sh(repo, "commit", "-q", "-m", "initial", env=env)
    return repo


@pytest.fixture
def remote(tmp_path: Path, ws: Path, env: dict[str, str]) -> Path:
    bare = tmp_path / "remote.git"
    sh(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare), env=env)
    sh(ws, "remote", "add", "origin", str(bare), env=env)
    return bare


@pytest.fixture
def ctx(ws: Path, env: dict[str, str]) -> ToolContext:
    return ToolContext(workspace=ws, env=dict(env))


async def call(t: Tool, ctx: ToolContext, **args: Any) -> str:
    return await t(ctx, t.validate(args))


def clone(remote: Path, dest: Path, env: dict[str, str]) -> Path:
    sh(remote.parent, "clone", "-q", str(remote), str(dest), env=env)
    sh(dest, "config", "user.email", "other@example.com", env=env)
    sh(dest, "config", "user.name", "Other", env=env)
    return dest


# --------------------------------------------------------------------------- read-only


async def test_status_diff_log(ctx: ToolContext, ws: Path) -> None:
    assert await call(git_status, ctx) == "## main\nnothing to commit, working tree clean"
    (ws / "README.md").write_text("hello\nworld\n")
    (ws / "new.txt").write_text("n\n")
    status = await call(git_status, ctx)
    assert " M README.md" in status and "?? new.txt" in status
    diff = await call(git_diff, ctx)
    assert "+world" in diff and "new.txt" not in diff
    assert "+world" in await call(git_diff, ctx, path="README.md")
    assert "no unstaged changes" in await call(git_diff, ctx, path="new.txt")
    assert "no staged changes" in await call(git_diff, ctx, staged=True)
    log = await call(git_log, ctx)
    assert log.endswith("Dev: initial") and len(log.splitlines()) == 1


async def test_not_a_repository(tmp_path: Path, env: dict[str, str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    env["GIT_CEILING_DIRECTORIES"] = str(tmp_path)  # do not find a repo above tmp
    ctx = ToolContext(workspace=plain, env=env)
    with pytest.raises(ToolError, match=r"not a git repository.*git init"):
        await call(git_status, ctx)


async def test_log_on_empty_repo_and_limit(tmp_path: Path, env: dict[str, str]) -> None:
    repo = init_repo(tmp_path / "empty", env)
    ctx = ToolContext(workspace=repo, env=env)
    assert await call(git_log, ctx) == "no commits yet"
    assert "no branches yet" in await call(git_branch, ctx)
    for i in range(3):
        (repo / f"f{i}").write_text(str(i))
        sh(repo, "add", ".", env=env)
        sh(repo, "commit", "-q", "-m", f"c{i}", env=env)
    assert len((await call(git_log, ctx, limit=2)).splitlines()) == 2
    assert len((await call(git_log, ctx, limit=1000)).splitlines()) == 3


# --------------------------------------------------------------------------- add / commit


async def test_add_commit_cycle(ctx: ToolContext, ws: Path, env: dict[str, str]) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "app.py").write_text("print(1)\n")
    out = await call(git_add, ctx, paths=["src/app.py"])
    assert "A  src/app.py" in out
    assert "+print(1)" in await call(git_diff, ctx, staged=True)
    out = await call(git_commit, ctx, message="Add app\n\nBody line.")
    assert "Add app" in out and "1 file changed" in out
    assert sh(ws, "log", "-1", "--format=%B", env=env).strip() == "Add app\n\nBody line."
    with pytest.raises(ToolError, match="nothing to commit, working tree clean"):
        await call(git_commit, ctx, message="again")
    (ws / "src" / "app.py").write_text("print(2)\n")
    with pytest.raises(ToolError, match=r"(?s)no changes added.*stage changes with git_add"):
        await call(git_commit, ctx, message="unstaged")
    with pytest.raises(ToolError, match="empty"):
        await call(git_commit, ctx, message="  ")


async def test_commit_message_cannot_inject_options(
    ctx: ToolContext, ws: Path, env: dict[str, str]
) -> None:
    (ws / "a.txt").write_text("a\n")
    await call(git_add, ctx, paths=["a.txt"])
    await call(git_commit, ctx, message="--amend")
    log = sh(ws, "log", "--format=%s", env=env).splitlines()
    assert log == ["--amend", "initial"]  # a new commit, the first one untouched


async def test_add_is_confined_and_refuses_options(
    ctx: ToolContext, ws: Path, tmp_path: Path
) -> None:
    (tmp_path / "outside.txt").write_text("x")
    for bad in ("../outside.txt", str(tmp_path / "outside.txt"), "/etc/passwd"):
        with pytest.raises(WorkspaceViolation):
            await call(git_add, ctx, paths=[bad])
    for opt in ("-A", "--all", "-f"):
        with pytest.raises(ToolError, match="starts with '-'"):
            await call(git_add, ctx, paths=[opt])
    with pytest.raises(ToolError, match="paths is empty"):
        await call(git_add, ctx, paths=[])


async def test_pathspec_magic_cannot_reach_outside_a_subdir_workspace(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = init_repo(tmp_path / "parent", env)
    (repo / "outside.txt").write_text("o\n")
    sub = repo / "sub"
    sub.mkdir()
    (sub / "inside.txt").write_text("i\n")
    ctx = ToolContext(workspace=sub, env=env)
    with pytest.raises(ToolError):
        await call(git_add, ctx, paths=[":/"])  # literal: a file named ':' does not exist
    await call(git_add, ctx, paths=["."])
    staged = sh(repo, "diff", "--cached", "--name-only", env=env).split()
    assert staged == ["sub/inside.txt"]


async def test_symlinked_path_is_staged_as_the_link(
    ctx: ToolContext, ws: Path, env: dict[str, str]
) -> None:
    (ws / "target.txt").write_text("t\n")
    (ws / "link.txt").symlink_to("target.txt")
    await call(git_add, ctx, paths=["link.txt"])
    assert sh(ws, "diff", "--cached", "--name-only", env=env).split() == ["link.txt"]


# --------------------------------------------------------------------------- branches


async def test_branch_and_checkout(ctx: ToolContext, ws: Path, env: dict[str, str]) -> None:
    out = await call(git_branch, ctx, name="feature")
    assert out.startswith("created branch feature (still on main")
    assert await call(git_branch, ctx) == "  feature\n* main"
    assert "Switched to branch 'feature'" in await call(git_checkout, ctx, branch="feature")
    out = await call(git_checkout, ctx, branch="topic", create=True)
    assert "Switched to a new branch 'topic'" in out
    assert sh(ws, "branch", "--show-current", env=env).strip() == "topic"
    with pytest.raises(ToolError, match="invalid reference"):
        await call(git_checkout, ctx, branch="nope")


async def test_checkout_never_discards_file_changes(ctx: ToolContext, ws: Path) -> None:
    (ws / "README.md").write_text("edited\n")
    with pytest.raises(ToolError):
        await call(git_checkout, ctx, branch="README.md")
    assert (ws / "README.md").read_text() == "edited\n"


@pytest.mark.parametrize(
    ("t", "args"),
    [
        (git_branch, {"name": "-D"}),
        (git_branch, {"name": "--delete"}),
        (git_checkout, {"branch": "--orphan"}),
        (git_checkout, {"branch": "-"}),
        (git_diff, {"path": "--output=/tmp/pwned"}),
        (git_push, {"remote": "--force"}),
        (git_push, {"branch": "-f"}),
        (git_pull, {"remote": "--upload-pack=touch /tmp/pwned"}),
    ],
)
async def test_option_injection_is_refused(ctx: ToolContext, t: Tool, args: dict[str, Any]) -> None:
    with pytest.raises(ToolError, match="starts with '-'"):
        await call(t, ctx, **args)


# --------------------------------------------------------------------------- push / pull


async def test_push_sets_upstream_and_lands(
    ctx: ToolContext, ws: Path, remote: Path, env: dict[str, str]
) -> None:
    out = await call(git_push, ctx)
    assert "main -> main" in out
    assert sh(remote, "log", "--format=%s", "main", env=env).strip() == "initial"
    assert sh(ws, "config", "branch.main.remote", env=env).strip() == "origin"
    await call(git_checkout, ctx, branch="feat", create=True)
    await call(git_push, ctx, remote="origin", branch="feat")
    assert "feat" in sh(remote, "branch", env=env)


@pytest.mark.parametrize(
    "branch", ["+main", "main --force", "main:+main", ":main", "--force", "-f", "+HEAD:main"]
)
async def test_push_never_forces(ctx: ToolContext, remote: Path, branch: str) -> None:
    with pytest.raises(ToolError):
        await call(git_push, ctx, branch=branch)


async def test_push_only_to_configured_remotes(ctx: ToolContext, remote: Path, tmp_path: Path):
    other = tmp_path / "other.git"
    with pytest.raises(ToolError, match="not configured; configured remotes: origin"):
        await call(git_push, ctx, remote=str(other))
    with pytest.raises(ToolError, match="not configured"):
        await call(git_push, ctx, remote="ext::sh")


async def test_push_without_remote(ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="no git remote is configured"):
        await call(git_push, ctx)


async def test_diverged_push_is_rejected_not_forced(
    ctx: ToolContext, ws: Path, remote: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    await call(git_push, ctx)
    other = clone(remote, tmp_path / "other", env)
    (other / "theirs.txt").write_text("t\n")
    sh(other, "add", ".", env=env)
    sh(other, "commit", "-q", "-m", "theirs", env=env)
    sh(other, "push", "-q", "origin", "main", env=env)
    (ws / "mine.txt").write_text("m\n")
    await call(git_add, ctx, paths=["mine.txt"])
    await call(git_commit, ctx, message="mine")
    with pytest.raises(ToolError, match="rejected"):
        await call(git_push, ctx)
    assert sh(remote, "log", "-1", "--format=%s", "main", env=env).strip() == "theirs"
    with pytest.raises(ToolError, match="diverged"):
        await call(git_pull, ctx)


async def test_pull_fast_forwards(
    ctx: ToolContext, ws: Path, remote: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    await call(git_push, ctx)
    other = clone(remote, tmp_path / "other", env)
    (other / "new.txt").write_text("n\n")
    sh(other, "add", ".", env=env)
    sh(other, "commit", "-q", "-m", "from other", env=env)
    sh(other, "push", "-q", "origin", "main", env=env)
    out = await call(git_pull, ctx)
    assert "Fast-forward" in out or "new.txt" in out
    assert (ws / "new.txt").read_text() == "n\n"
    assert "Already up to date" in await call(git_pull, ctx, remote="origin", branch="main")


def test_git_env_is_scrubbed_and_non_interactive(ws: Path) -> None:
    ctx = ToolContext(workspace=ws, env={"PATH": "/bin", "GH_TOKEN": "x", "AWS_SECRET": "y"})
    env = _git_env(ctx)
    assert "GH_TOKEN" not in env and "AWS_SECRET" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["PATH"] == "/bin"
