"""search_files: find files by glob, or grep their contents.

The walk uses ``os.scandir`` with an explicit stack, prunes skipped and
gitignored directories before descending, never follows directory symlinks
(loops, escapes), and runs in a thread. Results are relative to the workspace
so the model can pass them straight to read_file.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..types import ToolError
from .paths import display_path, resolve_in_workspace, workspace_root
from .registry import ToolContext, tool

__all__ = [
    "SKIP_DIRS",
    "GitIgnore",
    "glob_to_regex",
    "search_files",
]

SKIP_DIRS = frozenset(
    {
        ".git",
        "node_modules",
        ".venv",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
    }
)
MAX_GLOB_RESULTS = 200
MAX_GREP_MATCHES = 100
MAX_GREP_LINE = 200
MAX_GREP_FILE_BYTES = 5 * 1024 * 1024
MAX_VISITED = 200_000  # entries; a workspace that big needs a narrower path
BINARY_SNIFF_BYTES = 8192


# --------------------------------------------------------------------------- globs


def _translate(pat: str, braces: bool) -> str:
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            if pat.startswith("**", i):
                i += 2
                if i < n and pat[i] == "/":  # "**/": zero or more directories
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 2 if pat.startswith(("[!", "[^"), i) else i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : j].replace("\\", "\\\\")
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j + 1
                continue
        elif c == "{" and braces and "}" in pat[i:]:
            j = pat.index("}", i)
            alts = pat[i + 1 : j].split(",")
            out.append("(?:" + "|".join(_translate(a, False) for a in alts) + ")")
            i = j + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_to_regex(pattern: str, *, braces: bool = True) -> re.Pattern[str]:
    """``**/*.py``-style glob as a regex: ``*`` and ``?`` stop at ``/``, ``**`` crosses it."""
    return re.compile(_translate(pattern, braces) + r"\Z", re.DOTALL)


# --------------------------------------------------------------------------- gitignore


@dataclass(slots=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    anchored: bool  # matched against the whole relative path, else against the basename


@dataclass
class GitIgnore:
    """The workspace root's ``.gitignore``: globs, ``dir/`` rules, ``/anchored``, ``!negation``.

    Last matching rule wins, as in git. Parent directories are handled by the walk:
    an ignored directory is never entered.
    """

    rules: list[_Rule] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> GitIgnore:
        rules = []
        for raw in text.splitlines():
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            line = line.removeprefix("\\")
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            rules.append(_Rule(glob_to_regex(line, braces=False), negate, dir_only, anchored))
        return cls(rules)

    @classmethod
    def load(cls, root: Path) -> GitIgnore:
        try:
            return cls.parse((root / ".gitignore").read_text("utf-8", errors="replace"))
        except OSError:
            return cls()

    def ignored(self, rel: str, is_dir: bool) -> bool:
        base = rel.rsplit("/", 1)[-1]
        result = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(rel if rule.anchored else base):
                result = not rule.negate
        return result


# --------------------------------------------------------------------------- walking


@dataclass(slots=True)
class _Walk:
    root: Path
    ignore: GitIgnore
    visited: int = 0
    exhausted: bool = False  # stopped at MAX_VISITED


def _walk_files(walk: _Walk, base: Path) -> Iterator[tuple[str, str]]:
    """Yield ``(path relative to workspace, path relative to base)`` of files, sorted, pruned."""
    root_str = str(walk.root)
    stack = [base]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            walk.visited += 1
            if walk.visited > MAX_VISITED:
                walk.exhausted = True
                return
            rel = os.path.relpath(entry.path, root_str).replace(os.sep, "/")
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                if entry.name not in SKIP_DIRS and not walk.ignore.ignored(rel, True):
                    subdirs.append(Path(entry.path))
                continue
            if not is_file or walk.ignore.ignored(rel, False):
                continue
            if entry.is_symlink() and not Path(os.path.realpath(entry.path)).is_relative_to(
                walk.root
            ):
                continue  # a symlink pointing out of the workspace is not ours to read
            yield rel, os.path.relpath(entry.path, base).replace(os.sep, "/")
        stack.extend(reversed(subdirs))


def _glob(walk: _Walk, base: Path, pattern: str) -> tuple[list[str], bool]:
    pat = pattern.strip().removeprefix("./")
    root_prefix = str(walk.root) + "/"
    if pat.startswith(root_prefix):
        pat = pat[len(root_prefix) :]
    rx = glob_to_regex(pat.lstrip("/"))
    basename_only = "/" not in pat
    found: list[str] = []
    for rel, rel_base in _walk_files(walk, base):
        name = rel.rsplit("/", 1)[-1]
        if (basename_only and rx.match(name)) or rx.match(rel_base) or rx.match(rel):
            found.append(rel)
            if len(found) > MAX_GLOB_RESULTS:
                return found[:MAX_GLOB_RESULTS], True
    return found, False


def _grep_file(path: str, rx: re.Pattern[str]) -> list[tuple[int, str]]:
    try:
        if os.path.getsize(path) > MAX_GREP_FILE_BYTES:
            return []
        with open(path, "rb") as fh:
            raw = fh.read(BINARY_SNIFF_BYTES)
            if b"\x00" in raw:  # binary: skip before reading the rest
                return []
            raw += fh.read()
    except OSError:
        return []
    text = raw.decode("utf-8", errors="replace")
    if not rx.search(text):  # one pass over the file before splitting it into lines
        return []
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if rx.search(line)]


def _grep(walk: _Walk, base: Path, rx: re.Pattern[str]) -> tuple[list[str], bool]:
    out: list[str] = []
    for rel, _ in _walk_files(walk, base):
        for n, line in _grep_file(str(walk.root / rel), rx):
            text = line.strip()
            if len(text) > MAX_GREP_LINE:
                text = text[:MAX_GREP_LINE] + " [...]"
            out.append(f"{rel}:{n}: {text}")
            if len(out) >= MAX_GREP_MATCHES:
                return out, True
    return out, False


def _compile(pattern: str) -> tuple[re.Pattern[str], bool]:
    try:
        return re.compile(pattern), False
    except re.error:
        return re.compile(re.escape(pattern)), True


@tool(read_only=True, kind="read")
async def search_files(
    ctx: ToolContext, pattern: str, path: str | None = None, content_search: bool | None = None
) -> str:
    """Find files by glob; content_search: grep"""
    if not pattern or not pattern.strip():
        raise ToolError(
            "pattern is empty; give a glob like '**/*.py' or a regex with content_search=true"
        )
    base = resolve_in_workspace(ctx.workspace, path or ".")
    where = display_path(ctx.workspace, base)
    if not base.is_dir():
        raise ToolError(f"{where!r} is not a directory; give a directory as path (or omit it)")
    root = workspace_root(ctx.workspace)
    walk = _Walk(root, await asyncio.to_thread(GitIgnore.load, root))
    notes: list[str] = []
    if content_search:
        rx, literal = _compile(pattern)
        if literal:
            notes.append("(pattern is not a valid regex; searched for it as literal text)")
        results, capped = await asyncio.to_thread(_grep, walk, base, rx)
        if capped:
            notes.append(f"[stopped at {MAX_GREP_MATCHES} matches; narrow the pattern or path]")
        empty = f"no lines match {pattern!r} under {where}"
    else:
        results, capped = await asyncio.to_thread(_glob, walk, base, pattern)
        if capped:
            notes.append(f"[stopped at {MAX_GLOB_RESULTS} files; narrow the pattern or path]")
        empty = (
            f"no files match glob {pattern!r} under {where} "
            "(to search inside files set content_search=true)"
        )
    if walk.exhausted:
        notes.append(f"[walk stopped after {MAX_VISITED} entries; give a narrower path]")
    if not results:
        return "\n".join([empty, *notes])
    return "\n".join(results + notes)
