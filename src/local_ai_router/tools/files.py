"""File tools: read_file, write_file, edit_file, list_directory.

Every path goes through :func:`resolve_in_workspace`. Blocking I/O runs in a
thread so a slow disk never stalls the event loop. Error messages are written
for the model: they say what was wrong and what to call instead.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..types import ToolError, WorkspaceViolation
from .paths import display_path, resolve_in_workspace, workspace_root
from .registry import ToolContext, tool

__all__ = [
    "MAX_READ_CHARS",
    "MAX_READ_LINES",
    "edit_file",
    "is_binary_file",
    "list_directory",
    "read_file",
    "write_file",
]

MAX_READ_LINES = 400
MAX_READ_CHARS = 20_000
MAX_LINE_CHARS = 2_000  # one minified line must not eat the whole page
MAX_LIST_ENTRIES = 300
BINARY_SNIFF_BYTES = 8192


def is_binary_file(path: Path) -> bool:
    """A NUL byte in the first 8 KB: the same test git and grep use."""
    with path.open("rb") as fh:
        return b"\x00" in fh.read(BINARY_SNIFF_BYTES)


def _require_file(ctx: ToolContext, path: str) -> tuple[Path, str]:
    """Resolve ``path`` to an existing regular file, or a ToolError saying what it is instead."""
    real = resolve_in_workspace(ctx.workspace, path)
    rel = display_path(ctx.workspace, real)
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        raise ToolError(
            f"file {rel!r} does not exist; use list_directory or search_files to find it"
        ) from None
    except OSError as exc:
        raise ToolError(f"cannot open {rel!r}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ToolError(f"{rel!r} is a directory, not a file; use list_directory on it")
    if not stat.S_ISREG(mode):
        # FIFOs and devices would block or never end.
        raise ToolError(f"{rel!r} is not a regular file (device, socket or pipe); cannot read it")
    return real, rel


def _refuse_git_internals(ctx: ToolContext, real: Path) -> None:
    # Writing .git/config or .git/hooks would let a later git call run arbitrary commands.
    rel = real.relative_to(workspace_root(ctx.workspace))
    if ".git" in rel.parts:
        raise WorkspaceViolation(
            f"refusing to write inside .git ({rel.as_posix()!r}); use the git_* tools instead"
        )


# --------------------------------------------------------------------------- read_file


@dataclass(slots=True)
class _Window:
    lines: list[tuple[int, str]]
    total: int
    capped: bool  # stopped early because of the line or character budget


def _read_window(path: Path, start: int, end: int | None) -> _Window:
    lines: list[tuple[int, str]] = []
    chars = 0
    capped = False
    total = 0
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for total, raw in enumerate(fh, 1):
            if total < start or capped or (end is not None and total > end):
                continue
            line = raw.rstrip("\n")
            if len(line) > MAX_LINE_CHARS:
                line = f"{line[:MAX_LINE_CHARS]} [... {len(line) - MAX_LINE_CHARS} chars cut]"
            if lines and (len(lines) >= MAX_READ_LINES or chars + len(line) > MAX_READ_CHARS):
                capped = True
                continue
            lines.append((total, line))
            chars += len(line) + 8
    return _Window(lines, total, capped)


def _read_text_window(real: Path, start: int, end_line: int | None) -> _Window:
    """Binary check and read in one worker-thread hop (this runs on every agent step)."""
    if is_binary_file(real):
        size = real.stat().st_size
        raise ToolError(f"{real.name!r} is a binary file ({size} bytes); read_file only shows text")
    return _read_window(real, start, end_line)


@tool(read_only=True, kind="read")
async def read_file(
    ctx: ToolContext, path: str, start_line: int | None = None, end_line: int | None = None
) -> str:
    """Read a file (numbered lines)"""
    real, rel = _require_file(ctx, path)
    start = max(1, start_line or 1)
    if end_line is not None and end_line < start:
        raise ToolError(f"end_line ({end_line}) is before start_line ({start}); swap or drop it")
    try:
        win = await asyncio.to_thread(_read_text_window, real, start, end_line)
    except OSError as exc:
        raise ToolError(f"cannot read {rel!r}: {exc.strerror or exc}") from None
    if win.total == 0:
        return f"({rel} is empty)"
    if start > win.total:
        raise ToolError(
            f"start_line {start} is past the end of {rel!r}, which has {win.total} lines"
        )
    body = "\n".join(f"{n:>6}\t{text}" for n, text in win.lines)
    first, last = win.lines[0][0], win.lines[-1][0]
    if last < win.total and (win.capped or end_line is None):
        body += (
            f"\n[showing lines {first}-{last} of {win.total}; "
            f"call read_file with start_line={last + 1} to continue]"
        )
    elif first > 1 or last < win.total:
        body += f"\n[showing lines {first}-{last} of {win.total}]"
    return body


# --------------------------------------------------------------------------- write_file


def _write(real: Path, data: bytes) -> bool:
    existed = real.exists()
    real.parent.mkdir(parents=True, exist_ok=True)
    real.write_bytes(data)
    return existed


@tool(kind="write")
async def write_file(ctx: ToolContext, path: str, content: str) -> str:
    """Write a file"""
    real = resolve_in_workspace(ctx.workspace, path)
    rel = display_path(ctx.workspace, real)
    _refuse_git_internals(ctx, real)
    if real.is_dir():
        raise ToolError(f"{rel!r} is a directory; give a file path")
    data = content.encode("utf-8", "surrogateescape")
    try:
        existed = await asyncio.to_thread(_write, real, data)
    except OSError as exc:
        raise ToolError(f"cannot write {rel!r}: {exc.strerror or exc}") from None
    lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
    verb = "overwrote" if existed else "created"
    return f"{verb} {rel}: wrote {len(data)} bytes ({lines} line{'' if lines == 1 else 's'})"


# --------------------------------------------------------------------------- edit_file


def _not_found_hint(text: str, old: str) -> str:
    """Point the model at what it probably meant: whitespace drift or the nearest line."""
    squash = " ".join(old.split())
    if squash and squash in " ".join(text.split()):
        return (
            "It matches only when whitespace is ignored: copy the exact indentation and line "
            "breaks from read_file output (without the line-number prefix)."
        )
    target = next((ln.strip() for ln in old.splitlines() if ln.strip()), "")
    lines = text.splitlines()[:50_000]
    stripped = [ln.strip() for ln in lines]
    close = difflib.get_close_matches(target, stripped, n=1, cutoff=0.6) if target else []
    if close:
        n = stripped.index(close[0]) + 1
        return (
            f"Nearest line is {n}: {lines[n - 1].strip()[:200]!r}. "
            "Call read_file around it and copy the text exactly."
        )
    return "Call read_file and copy the exact text to replace."


def _snippet(text: str, first_line: int, n_lines: int) -> str:
    lines = text.splitlines()
    lo = max(1, first_line - 2)
    hi = min(len(lines), first_line + n_lines + 1, lo + 11)
    return "\n".join(f"{n:>6}\t{lines[n - 1][:MAX_LINE_CHARS]}" for n in range(lo, hi + 1))


def _crlf_variant(text: str, old: str, new: str) -> tuple[str, str]:
    # Models write "\n"; files from Windows have "\r\n". Match them anyway.
    if "\r\n" in text and "\n" in old and "\r\n" not in old and old not in text:
        return old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
    return old, new


@tool(kind="write")
async def edit_file(
    ctx: ToolContext,
    path: str,
    old_string: str,
    new_string: str,
    replace_all: bool | None = None,
) -> str:
    """Replace exact text"""
    if old_string == "":
        raise ToolError(
            "old_string is empty; give the exact text to replace (use write_file to create a file)"
        )
    if old_string == new_string:
        raise ToolError("old_string and new_string are identical; nothing would change")
    real, rel = _require_file(ctx, path)
    _refuse_git_internals(ctx, real)
    try:
        raw = await asyncio.to_thread(real.read_bytes)
    except OSError as exc:
        raise ToolError(f"cannot read {rel!r}: {exc.strerror or exc}") from None
    if b"\x00" in raw[:BINARY_SNIFF_BYTES]:
        raise ToolError(f"{rel!r} is a binary file; edit_file only edits text")
    # surrogateescape round-trips bytes that are not UTF-8, so the rest of the file is untouched.
    text = raw.decode("utf-8", "surrogateescape")
    old, new = _crlf_variant(text, old_string, new_string)
    count = text.count(old)
    if count == 0:
        raise ToolError(f"old_string not found in {rel}. {_not_found_hint(text, old_string)}")
    if count > 1 and not replace_all:
        raise ToolError(
            f"old_string matched {count} times in {rel}; add more surrounding context to make "
            "it unique, or set replace_all=true"
        )
    first_line = text[: text.index(old)].count("\n") + 1
    updated = text.replace(old, new) if replace_all else text.replace(old, new, 1)
    try:
        await asyncio.to_thread(real.write_bytes, updated.encode("utf-8", "surrogateescape"))
    except OSError as exc:
        raise ToolError(f"cannot write {rel!r}: {exc.strerror or exc}") from None
    done = count if replace_all else 1
    head = f"edited {rel}: replaced {done} occurrence{'s' if done > 1 else ''}"
    if done > 1:
        return head
    return f"{head} at line {first_line}:\n{_snippet(updated, first_line, new.count(chr(10)))}"


# --------------------------------------------------------------------------- list_directory


def _list(real: Path) -> list[str]:
    names: list[str] = []
    with os.scandir(real) as it:
        for entry in it:
            if entry.name == ".git":
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            names.append(entry.name + "/" if is_dir else entry.name)
    return sorted(names)


@tool(read_only=True, kind="read")
async def list_directory(ctx: ToolContext, path: str | None = None) -> str:
    """List a directory"""
    real = resolve_in_workspace(ctx.workspace, path or ".")
    rel = display_path(ctx.workspace, real)
    if not real.exists():
        raise ToolError(f"directory {rel!r} does not exist; call list_directory with no path")
    if not real.is_dir():
        raise ToolError(f"{rel!r} is a file, not a directory; use read_file on it")
    try:
        names = await asyncio.to_thread(_list, real)
    except OSError as exc:
        raise ToolError(f"cannot list {rel!r}: {exc.strerror or exc}") from None
    if not names:
        return f"({rel} is empty)"
    shown = names[:MAX_LIST_ENTRIES]
    out = "\n".join(shown)
    if len(names) > len(shown):
        out += (
            f"\n[... {len(names) - len(shown)} more entries not shown; "
            "use search_files with a glob to narrow]"
        )
    return out
