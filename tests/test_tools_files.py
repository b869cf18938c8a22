"""File and search tools on real files: confinement, paging, edits, listing, search."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from local_ai_router.tools.builtin import builtin_tools
from local_ai_router.tools.files import (
    MAX_READ_LINES,
    edit_file,
    list_directory,
    read_file,
    write_file,
)
from local_ai_router.tools.paths import display_path, resolve_in_workspace
from local_ai_router.tools.registry import Tool, ToolContext, ToolRegistry
from local_ai_router.tools.search import GitIgnore, glob_to_regex, search_files
from local_ai_router.types import ToolError, WorkspaceViolation


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def ctx(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


async def call(t: Tool, ctx: ToolContext, **args: Any) -> str:
    return await t(ctx, t.validate(args))


# --------------------------------------------------------------------------- confinement


def test_resolve_relative_and_absolute_inside(ws: Path) -> None:
    (ws / "a").mkdir()
    assert resolve_in_workspace(ws, "a/b.txt") == ws.resolve() / "a" / "b.txt"
    assert resolve_in_workspace(ws, str(ws / "a")) == ws.resolve() / "a"
    assert resolve_in_workspace(ws, "a/../c") == ws.resolve() / "c"
    assert resolve_in_workspace(ws, "") == ws.resolve()
    assert display_path(ws, resolve_in_workspace(ws, ".")) == "."


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "/etc/passwd", "/proc/self/environ", "~", "~/.ssh/id_rsa", "/"],
)
def test_resolve_refuses_escapes(ws: Path, path: str) -> None:
    with pytest.raises(WorkspaceViolation, match="workspace") as info:
        resolve_in_workspace(ws, path)
    assert repr(path) in str(info.value) or "home directory" in str(info.value)


def test_resolve_message_tells_what_to_do(ws: Path) -> None:
    with pytest.raises(WorkspaceViolation) as info:
        resolve_in_workspace(ws, "../x")
    assert str(info.value) == (
        f"path '../x' resolves outside the workspace {ws.resolve()}; use a path inside it"
    )


def test_resolve_refuses_sibling_with_common_prefix(ws: Path) -> None:
    # The string-prefix bug of the old system: /tmp/x/ws-evil starts with /tmp/x/ws.
    evil = ws.parent / (ws.name + "-evil")
    evil.mkdir()
    with pytest.raises(WorkspaceViolation):
        resolve_in_workspace(ws, str(evil / "f"))
    with pytest.raises(WorkspaceViolation):
        resolve_in_workspace(ws, f"../{evil.name}/f")


def test_resolve_refuses_symlinks_pointing_out(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s3cret")
    (ws / "link_dir").symlink_to(outside)
    (ws / "link_file").symlink_to(outside / "secret.txt")
    for p in ("link_dir/secret.txt", "link_file", "link_dir/new.txt"):
        with pytest.raises(WorkspaceViolation):
            resolve_in_workspace(ws, p)


def test_resolve_follows_symlinks_that_stay_inside(ws: Path, tmp_path: Path) -> None:
    (ws / "real").mkdir()
    (ws / "alias").symlink_to(ws / "real")
    assert resolve_in_workspace(ws, "alias/f") == ws.resolve() / "real" / "f"
    # The workspace itself may be reached through a symlink.
    link_ws = tmp_path / "ws-link"
    link_ws.symlink_to(ws)
    assert resolve_in_workspace(link_ws, "real") == ws.resolve() / "real"
    assert resolve_in_workspace(link_ws, str(link_ws / "real")) == ws.resolve() / "real"


def test_resolve_refuses_nul_byte(ws: Path) -> None:
    with pytest.raises(WorkspaceViolation, match="NUL"):
        resolve_in_workspace(ws, "a\x00b")


async def test_tools_refuse_escapes(ctx: ToolContext, ws: Path, tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    target.write_text("keep\n")
    (ws / "out").symlink_to(target)
    with pytest.raises(WorkspaceViolation):
        await call(read_file, ctx, path="/etc/passwd")
    with pytest.raises(WorkspaceViolation):
        await call(read_file, ctx, path="/proc/self/environ")
    with pytest.raises(WorkspaceViolation):
        await call(read_file, ctx, path="out")
    with pytest.raises(WorkspaceViolation):
        await call(write_file, ctx, path="out", content="pwned")
    with pytest.raises(WorkspaceViolation):
        await call(write_file, ctx, path="../outside.txt", content="pwned")
    with pytest.raises(WorkspaceViolation):
        await call(edit_file, ctx, path="out", old_string="keep", new_string="pwned")
    with pytest.raises(WorkspaceViolation):
        await call(list_directory, ctx, path="..")
    with pytest.raises(WorkspaceViolation):
        await call(search_files, ctx, pattern="*", path="/etc")
    assert target.read_text() == "keep\n"


async def test_registry_turns_violation_into_failed_outcome(ctx: ToolContext) -> None:
    reg = ToolRegistry(builtin_tools())
    out = await reg.execute("read_file", {"path": "../../etc/passwd"}, ctx)
    assert not out.ok and "outside the workspace" in (out.error or "")


# --------------------------------------------------------------------------- read_file


async def test_read_numbers_lines_like_cat_n(ctx: ToolContext, ws: Path) -> None:
    (ws / "f.txt").write_text("alpha\n\tbeta\ngamma")
    out = await call(read_file, ctx, path="f.txt")
    assert out == "     1\talpha\n     2\t\tbeta\n     3\tgamma"


async def test_read_pages_long_files(ctx: ToolContext, ws: Path) -> None:
    (ws / "big.txt").write_text("".join(f"line {i}\n" for i in range(1, 1001)))
    first = await call(read_file, ctx, path="big.txt")
    lines = first.splitlines()
    assert lines[0] == "     1\tline 1"
    assert lines[MAX_READ_LINES - 1] == f"{MAX_READ_LINES:>6}\tline {MAX_READ_LINES}"
    assert lines[-1] == (
        f"[showing lines 1-{MAX_READ_LINES} of 1000; "
        f"call read_file with start_line={MAX_READ_LINES + 1} to continue]"
    )
    second = await call(read_file, ctx, path="big.txt", start_line=MAX_READ_LINES + 1)
    assert second.splitlines()[0] == f"{MAX_READ_LINES + 1:>6}\tline {MAX_READ_LINES + 1}"
    last = await call(read_file, ctx, path="big.txt", start_line=990)
    assert last.splitlines()[-2:] == ["  1000\tline 1000", "[showing lines 990-1000 of 1000]"]


async def test_read_explicit_range(ctx: ToolContext, ws: Path) -> None:
    (ws / "f.txt").write_text("".join(f"l{i}\n" for i in range(1, 51)))
    out = await call(read_file, ctx, path="f.txt", start_line=10, end_line=12)
    assert out.splitlines() == [
        "    10\tl10",
        "    11\tl11",
        "    12\tl12",
        "[showing lines 10-12 of 50]",
    ]
    # end_line past the end is clamped; start_line 0 counts as 1.
    out = await call(read_file, ctx, path="f.txt", start_line=0, end_line=999)
    assert out.splitlines()[0] == "     1\tl1" and out.splitlines()[-1] == "    50\tl50"


async def test_read_pages_by_characters(ctx: ToolContext, ws: Path) -> None:
    (ws / "wide.txt").write_text("".join(("x" * 500) + "\n" for _ in range(200)))
    out = await call(read_file, ctx, path="wide.txt")
    assert len(out) < 21_000
    marker = out.splitlines()[-1]
    assert marker.startswith("[showing lines 1-") and "of 200" in marker
    shown = int(marker.split("-")[1].split(" ")[0])
    assert shown < 200 and f"start_line={shown + 1}" in marker


async def test_read_cuts_one_huge_line(ctx: ToolContext, ws: Path) -> None:
    (ws / "min.js").write_text("a" * 100_000)
    out = await call(read_file, ctx, path="min.js")
    assert len(out) < 3_000 and "chars cut" in out


async def test_read_bad_ranges(ctx: ToolContext, ws: Path) -> None:
    (ws / "f.txt").write_text("a\nb\n")
    with pytest.raises(ToolError, match=r"past the end of 'f\.txt', which has 2 lines"):
        await call(read_file, ctx, path="f.txt", start_line=5)
    with pytest.raises(ToolError, match="before start_line"):
        await call(read_file, ctx, path="f.txt", start_line=2, end_line=1)


async def test_read_refuses_binary_directory_missing_and_fifo(ctx: ToolContext, ws: Path) -> None:
    (ws / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ToolError, match="binary file"):
        await call(read_file, ctx, path="img.png")
    (ws / "d").mkdir()
    with pytest.raises(ToolError, match=r"is a directory.*list_directory"):
        await call(read_file, ctx, path="d")
    with pytest.raises(ToolError, match="does not exist"):
        await call(read_file, ctx, path="nope.txt")
    os.mkfifo(ws / "pipe")
    with pytest.raises(ToolError, match="not a regular file"):
        await call(read_file, ctx, path="pipe")


async def test_read_non_utf8_and_empty(ctx: ToolContext, ws: Path) -> None:
    (ws / "latin.txt").write_bytes(b"caf\xe9\n")
    assert await call(read_file, ctx, path="latin.txt") == "     1\tcaf\ufffd"
    (ws / "empty.txt").write_text("")
    assert "empty" in await call(read_file, ctx, path="empty.txt")


# --------------------------------------------------------------------------- write_file


async def test_write_creates_parents_and_reports_bytes(ctx: ToolContext, ws: Path) -> None:
    out = await call(write_file, ctx, path="a/b/c.txt", content="héllo\nworld\n")
    assert (ws / "a/b/c.txt").read_text() == "héllo\nworld\n"
    assert out == "created a/b/c.txt: wrote 13 bytes (2 lines)"
    out = await call(write_file, ctx, path="a/b/c.txt", content="x")
    assert out.startswith("overwrote a/b/c.txt: wrote 1 bytes")
    assert (ws / "a/b/c.txt").read_text() == "x"


async def test_write_refuses_directory_and_git_internals(ctx: ToolContext, ws: Path) -> None:
    (ws / "d").mkdir()
    with pytest.raises(ToolError, match="is a directory"):
        await call(write_file, ctx, path="d", content="x")
    with pytest.raises(WorkspaceViolation, match=r"\.git"):
        await call(write_file, ctx, path=".git/hooks/pre-commit", content="#!/bin/sh\n")
    assert not (ws / ".git").exists()


# --------------------------------------------------------------------------- edit_file


async def test_edit_replaces_unique_match(ctx: ToolContext, ws: Path) -> None:
    (ws / "m.py").write_text("def f():\n    return 1\n\ndef g():\n    return 2\n")
    out = await call(edit_file, ctx, path="m.py", old_string="return 2", new_string="return 3")
    assert (ws / "m.py").read_text() == "def f():\n    return 1\n\ndef g():\n    return 3\n"
    assert out.startswith("edited m.py: replaced 1 occurrence at line 5")
    assert "     5\t    return 3" in out


async def test_edit_not_found_points_at_nearest_line(ctx: ToolContext, ws: Path) -> None:
    (ws / "m.py").write_text("import os\n\ndef compute_total(items):\n    return sum(items)\n")
    with pytest.raises(ToolError, match=r"old_string not found in m\.py") as info:
        await call(
            edit_file, ctx, path="m.py", old_string="def compute_totals(item):", new_string="x"
        )
    assert "Nearest line is 3" in str(info.value) and "compute_total(items)" in str(info.value)
    before = (ws / "m.py").read_text()
    with pytest.raises(ToolError, match="whitespace"):
        await call(
            edit_file,
            ctx,
            path="m.py",
            old_string="def compute_total(items):\n  return sum(items)",
            new_string="x",
        )
    assert (ws / "m.py").read_text() == before


async def test_edit_multiple_matches_needs_context_or_replace_all(
    ctx: ToolContext, ws: Path
) -> None:
    (ws / "f.txt").write_text("a = 1\nb = 1\nc = 1\n")
    with pytest.raises(ToolError, match=r"matched 3 times.*replace_all"):
        await call(edit_file, ctx, path="f.txt", old_string="= 1", new_string="= 2")
    assert (ws / "f.txt").read_text() == "a = 1\nb = 1\nc = 1\n"
    out = await call(
        edit_file, ctx, path="f.txt", old_string="= 1", new_string="= 2", replace_all=True
    )
    assert out == "edited f.txt: replaced 3 occurrences"
    assert (ws / "f.txt").read_text() == "a = 2\nb = 2\nc = 2\n"


async def test_edit_rejects_noops_and_bad_targets(ctx: ToolContext, ws: Path) -> None:
    (ws / "f.txt").write_text("x\n")
    with pytest.raises(ToolError, match="identical"):
        await call(edit_file, ctx, path="f.txt", old_string="x", new_string="x")
    with pytest.raises(ToolError, match="empty"):
        await call(edit_file, ctx, path="f.txt", old_string="", new_string="y")
    with pytest.raises(ToolError, match="does not exist"):
        await call(edit_file, ctx, path="g.txt", old_string="x", new_string="y")
    (ws / "b.bin").write_bytes(b"x\x00y")
    with pytest.raises(ToolError, match="binary"):
        await call(edit_file, ctx, path="b.bin", old_string="x", new_string="z")


async def test_edit_crlf_file_and_non_utf8_bytes_survive(ctx: ToolContext, ws: Path) -> None:
    (ws / "win.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    await call(edit_file, ctx, path="win.txt", old_string="one\ntwo", new_string="1\n2")
    assert (ws / "win.txt").read_bytes() == b"1\r\n2\r\nthree\r\n"
    (ws / "raw.txt").write_bytes(b"caf\xe9 = 1\nkeep\xff\n")
    await call(edit_file, ctx, path="raw.txt", old_string="= 1", new_string="= 2")
    assert (ws / "raw.txt").read_bytes() == b"caf\xe9 = 2\nkeep\xff\n"


# --------------------------------------------------------------------------- list_directory


async def test_list_sorted_dirs_marked_git_skipped(ctx: ToolContext, ws: Path) -> None:
    for d in ("src", ".git", "b_dir"):
        (ws / d).mkdir()
    for f in ("z.txt", "a.txt", ".env.example"):
        (ws / f).write_text("")
    out = await call(list_directory, ctx)
    assert out.splitlines() == [".env.example", "a.txt", "b_dir/", "src/", "z.txt"]
    assert await call(list_directory, ctx, path="src") == "(src is empty)"


async def test_list_caps_entries_and_refuses_files(ctx: ToolContext, ws: Path) -> None:
    (ws / "many").mkdir()
    for i in range(350):
        (ws / "many" / f"f{i:04d}").write_text("")
    out = await call(list_directory, ctx, path="many")
    assert out.splitlines()[0] == "f0000"
    assert "[... 50 more entries not shown" in out.splitlines()[-1]
    with pytest.raises(ToolError, match=r"is a file.*read_file"):
        await call(list_directory, ctx, path="many/f0001")
    with pytest.raises(ToolError, match="does not exist"):
        await call(list_directory, ctx, path="missing")


# --------------------------------------------------------------------------- search_files


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*.py", "src/a/b.py", True),
        ("**/*.py", "top.py", True),
        ("src/*.py", "src/a/b.py", False),
        ("src/*.py", "src/x.py", True),
        ("src/**", "src/a/b.py", True),
        ("*.{ts,tsx}", "app.tsx", True),
        ("*.{ts,tsx}", "app.js", False),
        ("file?.txt", "file1.txt", True),
        ("[!a]*.md", "readme.md", True),
        ("[!a]*.md", "about.md", False),
    ],
)
def test_glob_to_regex(pattern: str, path: str, expected: bool) -> None:
    assert bool(glob_to_regex(pattern).match(path)) is expected


def test_gitignore_rules() -> None:
    gi = GitIgnore.parse("# c\n*.log\n!keep.log\nbuild/\n/root_only.txt\ndocs/*.tmp\n")
    assert gi.ignored("a/b/x.log", False)
    assert not gi.ignored("a/keep.log", False)
    assert gi.ignored("build", True) and gi.ignored("pkg/build", True)
    assert not gi.ignored("build", False)  # dir-only rule, and this is a file
    assert gi.ignored("root_only.txt", False) and not gi.ignored("sub/root_only.txt", False)
    assert gi.ignored("docs/a.tmp", False) and not gi.ignored("docs/sub/a.tmp", False)


def _make_tree(ws: Path) -> None:
    files = {
        "main.py": "print('hello')\n",
        "src/pkg/mod.py": "def hello():\n    return 'hello world'\n",
        "src/pkg/data.json": '{"hello": 1}\n',
        ".git/config": "hello = git\n",
        "node_modules/lib/index.py": "hello\n",
        ".venv/lib/site.py": "hello\n",
        "src/__pycache__/mod.py": "hello\n",
        "build/out.py": "hello\n",
        "debug.log": "hello\n",
        "keep.log": "hello keep\n",
    }
    for rel, text in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    (ws / "blob.py").write_bytes(b"hello\x00\x01binary")
    (ws / ".gitignore").write_text("build/\n*.log\n!keep.log\n")


async def test_search_glob_skips_vcs_deps_and_ignored(ctx: ToolContext, ws: Path) -> None:
    _make_tree(ws)
    out = await call(search_files, ctx, pattern="**/*.py")
    assert sorted(out.splitlines()) == ["blob.py", "main.py", "src/pkg/mod.py"]
    out = await call(search_files, ctx, pattern="*.log")
    assert out.splitlines() == ["keep.log"]
    out = await call(search_files, ctx, pattern="*.py", path="src")
    assert out.splitlines() == ["src/pkg/mod.py"]
    # An ignored directory can still be searched when asked for explicitly.
    assert (await call(search_files, ctx, pattern="*.py", path="build")) == "build/out.py"


async def test_search_content_format_and_skips(ctx: ToolContext, ws: Path) -> None:
    _make_tree(ws)
    out = await call(search_files, ctx, pattern=r"hel+o", content_search=True)
    assert out.splitlines() == [
        "keep.log:1: hello keep",
        "main.py:1: print('hello')",
        'src/pkg/data.json:1: {"hello": 1}',
        "src/pkg/mod.py:1: def hello():",
        "src/pkg/mod.py:2: return 'hello world'",
    ]


async def test_search_invalid_regex_falls_back_to_literal(ctx: ToolContext, ws: Path) -> None:
    (ws / "a.py").write_text("x = f(1\ny = 2\n")
    out = await call(search_files, ctx, pattern="f(1", content_search=True)
    assert out.splitlines()[0] == "a.py:1: x = f(1"
    assert "literal" in out


async def test_search_caps_and_hints(ctx: ToolContext, ws: Path) -> None:
    (ws / "many.txt").write_text("match\n" * 150)
    out = await call(search_files, ctx, pattern="match", content_search=True)
    assert len([ln for ln in out.splitlines() if ln.startswith("many.txt:")]) == 100
    assert "[stopped at 100 matches" in out
    (ws / "d").mkdir()
    for i in range(210):
        (ws / "d" / f"{i:03d}.md").write_text("")
    out = await call(search_files, ctx, pattern="*.md")
    assert len(out.splitlines()) == 201 and "[stopped at 200 files" in out
    out = await call(search_files, ctx, pattern="def main")
    assert "no files match" in out and "content_search=true" in out
    with pytest.raises(ToolError, match="not a directory"):
        await call(search_files, ctx, pattern="*", path="many.txt")
    with pytest.raises(ToolError, match="pattern is empty"):
        await call(search_files, ctx, pattern="  ")


async def test_search_does_not_follow_links_out(ctx: ToolContext, ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("TOKEN = 'leak'\n")
    (ws / "linkdir").symlink_to(outside)
    (ws / "linkfile.py").symlink_to(outside / "secret.py")
    (ws / "ok.py").write_text("TOKEN = None\n")
    out = await call(search_files, ctx, pattern="TOKEN", content_search=True)
    assert out == "ok.py:1: TOKEN = None"
    assert await call(search_files, ctx, pattern="*.py") == "ok.py"


# --------------------------------------------------------------------------- schema economy


def test_builtin_schemas_are_small_and_ordered() -> None:
    tools = builtin_tools()
    assert [t.name for t in tools] == [
        "read_file", "write_file", "edit_file", "list_directory", "search_files", "run_shell",
        "git_status", "git_diff", "git_log", "git_add", "git_commit", "git_push", "git_pull",
        "git_branch", "git_checkout",
    ]  # fmt: skip
    size = len(json.dumps([t.native_schema() for t in tools], separators=(",", ":")))
    assert size <= 3_000
    assert all(len(t.description) <= 60 for t in tools)
    kinds = {t.name: (t.read_only, t.kind) for t in tools}
    assert kinds["read_file"] == (True, "read") and kinds["git_log"] == (True, "read")
    assert kinds["edit_file"] == (False, "write") and kinds["run_shell"] == (False, "shell")
    assert kinds["git_push"] == (False, "other")
