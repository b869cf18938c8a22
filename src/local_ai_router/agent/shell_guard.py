"""The built-in guard list and the read-only command list, for shell commands.

The guard catches commands that are destructive (deny: ``rm -rf /``, ``mkfs``,
``dd of=/dev/sda``, fork bombs, writes to ``/etc/shadow``, ``curl | sh``) or
risky (ask: ``sudo``, ``git push --force``, ``git reset --hard``, ``reboot``...)
in every part of a parsed command, however it was wrapped, quoted or nested.
It is tuned to keep false positives low: ``rm -rf build/``, ``git push origin
main`` and ``curl -o x URL`` pass. :func:`is_read_only` decides which commands
the ``ask``, ``acceptEdits`` and ``plan`` modes let through without asking.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .shell_parse import (
    FETCHERS,
    INTERPRETERS,
    ParsedCommand,
    ShellPart,
    literal_payload,
    normalize,
    reads_stdin_script,
)

__all__ = ["GuardHit", "git_subcommand", "guard", "guard_part", "is_read_only"]

_WRITE_OPS = frozenset({">", ">>", ">|", "&>", "&>>", "<>"})


@dataclass(frozen=True, slots=True)
class GuardHit:
    level: Literal["deny", "ask"]
    id: str
    reason: str
    part: str = ""  # the command text the hit was found in
    index: int = -1  # index of that part in ParsedCommand.parts (-1: the whole command)


# --------------------------------------------------------------------------- read-only


ArgCheck = Callable[[list[str]], bool]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _no_opts(*bad: str) -> ArgCheck:
    return lambda args: not any(a == b or a.startswith(b + "=") for a in args for b in bad)


def _any_args(args: list[str]) -> bool:
    return True


_PLAIN_READERS = _words(
    "ls cat head tail grep egrep fgrep wc pwd echo printf which whoami file stat du df basename "
    "dirname realpath readlink true false test [ [[ cd uname id type cut nl tac cmp comm diff "
    "md5sum sha1sum sha256sum jq hostname ps env printenv column rev seq groups"
)
_READ_ONLY: dict[str, ArgCheck] = {
    **dict.fromkeys(_PLAIN_READERS, _any_args),
    "rg": _no_opts("--pre"),
    "find": _no_opts(*_words("-exec -execdir -ok -okdir -delete -fprint -fprint0 -fprintf -fls")),
    "sort": _no_opts("-o", "--output"),
    "tree": _no_opts("-o"),
    "date": _no_opts("-s", "--set"),
}
_GIT_READ = _words(
    "status diff log show branch rev-parse ls-files blame describe shortlog remote tag grep "
    "ls-tree cat-file reflog"
)
_BRANCH_LIST = _words(
    "-a -r -v -vv -l --list --all --remotes --show-current --merged --no-merged --contains "
    "--color --no-color --verbose"
)


def git_subcommand(core: list[str]) -> tuple[str, list[str], bool]:
    """(subcommand, its args, whether ``-c`` config overrides were given)."""
    i, config = 1, False
    while i < len(core) and core[i].startswith("-"):
        config |= core[i] == "-c" or core[i].startswith("--config-env")
        i += 2 if core[i] in ("-C", "-c", "--git-dir", "--work-tree", "--namespace") else 1
    return (core[i], core[i + 1 :], config) if i < len(core) else ("", [], config)


def _git_read_only(core: list[str]) -> bool:
    sub, args, config = git_subcommand(core)
    if (
        config
        or sub not in _GIT_READ
        or any(a.startswith(("--output", "--ext-diff")) for a in args)
    ):
        return False
    if sub == "branch":
        return all(a in _BRANCH_LIST for a in args) or "--list" in args or "-l" in args
    if sub == "remote":
        return not args or args[0] in ("-v", "show", "get-url")
    if sub == "tag":
        return not args or args[0] in ("-l", "--list")
    return sub != "reflog" or not args or args[0] == "show"


def is_read_only(part: ShellPart) -> bool:
    """True when the part only reads (no writes, no privilege, no computed program)."""
    if part.dynamic_program or {"sudo", "doas", "pkexec"} & set(part.wrappers):
        return False
    for r in part.redirects:
        target = r.target.text if r.target else ""
        if r.op in _WRITE_OPS and target not in ("/dev/null", "/dev/stdout", "/dev/stderr"):
            return False
    if not part.core:
        return True
    if part.program == "git":
        return _git_read_only(part.core)
    check = _READ_ONLY.get(part.program)
    return check is not None and check(part.core[1:])


# --------------------------------------------------------------------------- guard

_SENSITIVE = ("/etc/passwd", "/etc/shadow", "/etc/sudoers", "/etc/group", "/etc/gshadow")
_DEVICE = re.compile(
    r"^/dev/(sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|disk\d|dm-\d|md\d"
    r"|loop\d|mapper/|sr\d|mem$|kmem$|port$)"
)
# Linear time: a name starts only after a delimiter and is matched possessively.
_FORK_BOMB = re.compile(
    r"(?:function\s+)?(?<![^\s(){};|&])([^\s(){};|&]++)\s*(?:\(\s*\))?\s*\{\s*\1\s*\|\s*\1\s*&"
)


@dataclass(frozen=True, slots=True)
class GuardContext:
    workspace: str
    home: str


_HOME = re.compile(r"^(~|\$HOME|\$\{HOME\})(?=/|$)")
_EXPANSION = re.compile(r"\$\([^)]*\)|`[^`]*`|\$\{[^}]*\}|\$[A-Za-z_0-9@*#?!-]+")


def _resolve(target: str, ctx: GuardContext) -> str:
    t = _HOME.sub(lambda _m: ctx.home, target)
    return os.path.normpath(t if t.startswith("/") else os.path.join(ctx.workspace, t))


def _critical(
    path: str, ctx: GuardContext, *, workspace: bool = True, shallow: bool = True
) -> bool:
    """Root, home, a top-level dir (``/usr``), an ancestor of the workspace, or the workspace."""
    ws = ctx.workspace
    return (
        path == "/"
        or path == ctx.home
        or (workspace and path == ws)
        or (path != ws and (ws + "/").startswith(path.rstrip("/") + "/"))
        or (shallow and os.path.dirname(path) == "/")
    )


def _target_level(
    target: str, ctx: GuardContext, *, workspace: bool = True
) -> Literal["deny", "ask"] | None:
    base = _HOME.sub(lambda _m: ctx.home, target)
    if os.path.basename(base.rstrip("/")) in ("*", ".*", "{*,.*}"):
        base = os.path.dirname(base.rstrip("/")) or "."  # everything inside = the dir itself
    if not any(c in base for c in "$`"):
        return "deny" if _critical(_resolve(base, ctx), ctx, workspace=workspace) else None
    # A computed target: judge it as if every expansion were empty (an unset variable).
    emptied = _EXPANSION.sub("", base)
    if not emptied.strip() or _critical(_resolve(emptied, ctx), ctx, shallow=False):
        return "ask"
    return None


def _flags(args: list[str]) -> tuple[set[str], list[str]]:
    opts: set[str] = set()
    operands: list[str] = []
    ended = False
    for a in args:
        if not ended and a == "--":
            ended = True
        elif not ended and a.startswith("--"):
            opts.add(a.split("=", 1)[0])
        elif not ended and a.startswith("-") and len(a) > 1:
            opts.update("-" + c for c in a[1:])
        else:
            operands.append(a)
    return opts, operands


def _write_targets(part: ShellPart) -> list[str]:
    out = [r.target.text for r in part.redirects if r.op in _WRITE_OPS and r.target]
    prog, args = part.program, part.core[1:]
    opts, operands = _flags(args)
    if prog in ("tee", "truncate", "shred", "mv", "chmod", "chown", "chattr", "chgrp"):
        out += operands
    elif prog in ("cp", "install", "ln", "rsync") and operands:
        out.append(operands[-1])
    elif prog == "sed" and ("-i" in opts or "--in-place" in opts):
        out += operands
    elif prog == "dd":
        out += [a[3:] for a in args if a.startswith("of=")]
    return out


Hit = tuple[Literal["deny", "ask"], str, str]


def _destructive(part: ShellPart, ctx: GuardContext) -> list[Hit]:
    prog, args = part.program, part.core[1:]
    opts, operands = _flags(args)
    recursive = bool({"-r", "-R", "--recursive"} & opts)
    hits: list[Hit] = []
    if prog == "rm" and recursive:
        for t in operands:
            if level := _target_level(t, ctx):
                hits.append(
                    (
                        level,
                        "rm-root",
                        f"rm -r of {t!r}: root, home, a top-level "
                        "directory, the workspace or one of its parents",
                    )
                )
    elif prog in ("chmod", "chown", "chgrp") and recursive:
        for t in operands:
            if level := _target_level(t, ctx, workspace=False):
                hits.append((level, f"{prog}-root", f"{prog} -R of {t!r}"))
        if prog == "chown" and not hits:
            hits.append(("ask", "chown-recursive", "recursive chown"))
    elif prog == "find":
        starts = [a for a in args if not a.startswith(("-", "(", "!"))][:1] or ["."]
        expr = args[args.index(starts[0]) + 1 :] if starts[0] in args else args
        wipes = expr == ["-delete"] or (expr[:1] == ["-exec"] and expr[1:2] == ["rm"])
        level = _target_level(starts[0], ctx, workspace=wipes)
        if level and ("-delete" in expr or any(a in ("-exec", "-execdir") for a in expr)):
            hits.append((level, "find-delete", f"find {starts[0]!r} deleting files"))
    if prog.startswith("mkfs") or prog in ("mke2fs", "wipefs"):
        hits.append(("deny", "mkfs", f"{prog} formats or wipes a filesystem"))
    for t in _write_targets(part):
        path = _resolve(t, ctx)
        if path in _SENSITIVE or path.startswith("/etc/sudoers.d/"):
            hits.append(("deny", "sensitive-file", f"writes to {path}"))
        elif _DEVICE.match(path):
            hits.append(("deny", "device-write", f"writes to the device {path}"))
    if part.fetch_in_program or (part.fetch_in_args and prog in INTERPRETERS | {"eval"}):
        hits.append(("deny", "download-exec", "runs code downloaded from the network"))
    return hits


_SYSTEMCTL_RISKY = {
    "stop",
    "disable",
    "mask",
    "kill",
    "reboot",
    "poweroff",
    "halt",
    "isolate",
    "rescue",
    "emergency",
}
_PUSH_FORCE = {
    "-f",
    "--force",
    "--force-with-lease",
    "--force-if-includes",
    "--mirror",
    "--delete",
    "-d",
}


def _git_risky(core: list[str]) -> list[Hit]:
    sub, args, _ = git_subcommand(core)
    opts, operands = _flags(args)
    if sub == "push" and (_PUSH_FORCE & opts or any(o.startswith(("+", ":")) for o in operands)):
        return [("ask", "git-force-push", "git push that overwrites or deletes remote refs")]
    if sub == "reset" and "--hard" in opts:
        return [("ask", "git-reset-hard", "git reset --hard discards changes")]
    if sub == "clean" and {"-f", "--force"} & opts:
        return [("ask", "git-clean", "git clean -f deletes untracked files")]
    return []


def _docker_risky(prog: str, args: list[str]) -> list[Hit]:
    opts, operands = _flags(args)
    head = operands[:2]
    removes = operands[:1] in (["rm"], ["rmi"]) or head in (["container", "rm"], ["image", "rm"])
    if (removes and {"-f", "--force"} & opts) or head in (
        ["system", "prune"],
        ["volume", "rm"],
        ["volume", "prune"],
    ):
        return [("ask", "docker-remove", f"{prog} {' '.join(head)} removes data")]
    return []


def _risky(part: ShellPart) -> list[Hit]:
    prog, args = part.program, part.core[1:]
    _, operands = _flags(args)
    hits: list[Hit] = []
    if {"sudo", "doas", "pkexec"} & set(part.wrappers) or prog in (
        "sudo",
        "su",
        "doas",
        "pkexec",
        "sudoedit",
    ):
        hits.append(("ask", "privilege", "runs with elevated privileges"))
    if part.dynamic_program:
        hits.append(("ask", "dynamic-command", "the command name is computed at run time"))
    elif part.core and not part.core[0].isascii():
        hits.append(("ask", "non-ascii-command", f"non-ASCII command name {part.core[0]!r}"))
    if prog == "git":
        hits += _git_risky(part.core)
    if prog in ("docker", "podman"):
        hits += _docker_risky(prog, args)
    if prog in ("reboot", "shutdown", "halt", "poweroff") or (
        prog in ("init", "telinit") and operands[:1] in (["0"], ["6"])
    ):
        hits.append(("ask", "power", f"{prog} stops or restarts the machine"))
    if prog == "systemctl" and operands[:1] and operands[0] in _SYSTEMCTL_RISKY:
        hits.append(("ask", "systemctl", f"systemctl {operands[0]}"))
    if prog in ("fdisk", "sfdisk", "parted", "gdisk"):
        hits.append(("ask", "partition", f"{prog} edits partition tables"))
    if prog == "kill" and any(a in ("1", "-1") for a in _kill_pids(args)):
        hits.append(("ask", "kill-init", "kills init or every process"))
    return hits


def _kill_pids(args: list[str]) -> list[str]:
    if args[:1] in (["-s"], ["-n"]):
        return args[2:]
    if len(args) > 1 and args[0].startswith("-") and args[0] != "--":
        return args[1:]  # the first option is the signal (``kill -1 123`` is SIGHUP)
    return [a for a in args if a != "--"]


def guard_part(
    part: ShellPart, workspace: Path | str, home: str | None = None, index: int = -1
) -> list[GuardHit]:
    """Guard-list hits of one part."""
    ctx = _context(workspace, home)
    found = _destructive(part, ctx) + _risky(part)
    return [GuardHit(level, gid, why, part.raw[:200], index) for level, gid, why in found]


def _context(workspace: Path | str, home: str | None) -> GuardContext:
    return GuardContext(
        os.path.normpath(str(workspace)), os.path.normpath(home or os.path.expanduser("~"))
    )


def _xargs_rm(part: ShellPart, upstream: list[ShellPart], ctx: GuardContext, k: int
              ) -> list[GuardHit]:  # fmt: skip
    """``... | xargs rm -rf``: the targets come from stdin; judge them when they are literal."""
    opts, _ = _flags(part.core[1:])
    if (
        part.program != "rm"
        or "xargs" not in part.wrappers
        or not opts & {"-r", "-R", "--recursive"}
    ):
        return []
    payload = literal_payload(upstream)
    if payload is None:
        return [GuardHit("ask", "rm-stdin-targets", "rm -r of targets read from stdin",
                         part.raw[:200], k)]  # fmt: skip
    levels = {_target_level(t, ctx) for t in payload.split()}
    for level in ("deny", "ask"):
        if level in levels:
            why = "rm -r of a critical path read from stdin"
            return [GuardHit(level, "rm-root", why, part.raw[:200], k)]
    return []


def guard(parsed: ParsedCommand, workspace: Path | str, home: str | None = None) -> list[GuardHit]:
    """Every guard-list hit in the command, deny first."""
    hits: list[GuardHit] = []
    source = normalize(parsed.source)
    if _FORK_BOMB.search(source):
        hits.append(GuardHit("deny", "fork-bomb", "fork bomb", source[:200]))
    by_pipe: dict[int, list[tuple[int, ShellPart]]] = {}
    for k, p in enumerate(parsed.parts):
        hits += guard_part(p, workspace, home, k)
        by_pipe.setdefault(p.pipeline, []).append((k, p))
    ctx = _context(workspace, home)
    for group in by_pipe.values():
        for pos, (k, p) in enumerate(group[1:], 1):
            hits += _xargs_rm(p, [u for _, u in group[:pos]], ctx, k)
            if not reads_stdin_script(p) or p.stdin_script_known:
                continue
            fetched = any(u.program in FETCHERS for _, u in group[:pos])
            level: Literal["deny", "ask"] = "deny" if fetched else "ask"
            what = "downloaded content" if fetched else "data"
            hits.append(
                GuardHit(
                    level,
                    "download-exec" if fetched else "pipe-to-interpreter",
                    f"pipes {what} into {p.program}, which runs it",
                    p.raw[:200],
                    k,
                )
            )
    return sorted(hits, key=lambda h: h.level != "deny")
