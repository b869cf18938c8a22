"""Shell command analysis for the permission gate.

The model is untrusted input, so judging ``run_shell`` needs more than a regex:
``a && b``, ``$(b)``, ``bash -c 'b'``, ``timeout 5 b``, ``'r'm`` and ``r\\m`` all
run ``b`` or ``rm``. :func:`parse` tokenizes a command the way a POSIX shell
does (quotes, escapes, ANSI-C strings, substitutions, redirections, here-docs),
splits it into simple commands, strips wrappers and looks inside nested scripts
(``bash -c``, ``eval``, ``$( )``, backticks, ``<( )``, ``find -exec``, literal
``echo ... | sh``). It never executes anything. What it cannot understand is
reported in ``problems`` so the caller can ask instead of guessing.

The tokenizer lives in :mod:`.shell_lex`; the guard list and the read-only list that use
these parts live in :mod:`.shell_guard`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from itertools import count

from .shell_lex import Redirect, ShellSyntaxError, Word, find_invisible, tokenize

# Defined here before the tokenizer moved out; kept importable from this module.
from .shell_lex import find_substitutions as find_substitutions

__all__ = [
    "FETCHERS",
    "INTERPRETERS",
    "SHELLS",
    "ParsedCommand",
    "Redirect",
    "ShellPart",
    "find_invisible",
    "literal_payload",
    "normalize",
    "parse",
    "reads_stdin_script",
    "strip_wrappers",
]


def _words(text: str) -> frozenset[str]:
    """A word set written as one string (keeps long tables readable)."""
    return frozenset(text.split())


MAX_DEPTH = 8
MAX_PARTS = 400
MAX_SOURCE = 100_000

SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish", "rbash"})
INTERPRETERS = SHELLS | {"python", "python3", "perl", "ruby", "node", "php", "source", "."}
FETCHERS = frozenset({"curl", "wget", "fetch", "http", "https", "aria2c", "nc", "ncat", "socat"})
_RESERVED = _words("! { } if then else elif fi do done while until esac in")
_LOOP_HEADERS = frozenset({"for", "select", "case", "function"})
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_IFS = re.compile(r"\$\{IFS[^}]*\}|\$IFS(?![A-Za-z0-9_])")


@dataclass(slots=True)
class ShellPart:
    """One simple command of a (possibly compound, possibly nested) command line."""

    words: list[str]
    core: list[str]  # the command that runs: assignments and wrappers stripped
    wrappers: list[str]
    redirects: list[Redirect]
    raw: str
    raw_core: str
    pipeline: int  # parts with the same number are joined by ``|``
    depth: int
    dynamic_program: bool = False
    transparent: bool = False  # shell/eval whose script was parsed into other parts
    stdin_script_known: bool = False  # ``echo ... | sh`` whose script was parsed
    fetch_in_program: bool = False  # ``$(curl ...)`` as the command itself
    fetch_in_args: bool = False  # ``sh <(curl ...)``, ``bash -c "$(curl ...)"``

    @property
    def program(self) -> str:
        return os.path.basename(self.core[0]) if self.core else ""

    @property
    def text(self) -> str:
        return " ".join(self.core)


@dataclass(slots=True)
class ParsedCommand:
    source: str
    parts: list[ShellPart]
    problems: list[str]
    invisible: list[str]


# --------------------------------------------------------------------------- parser


def _skip_opts(args: list[str], i: int, with_value: Collection[str]) -> int:
    """Index of the first operand after options; ``with_value`` options take the next arg."""
    while i < len(args):
        a = args[i]
        if a == "--":
            return i + 1
        if not a.startswith("-") or a == "-":
            return i
        i += 2 if (a in with_value and "=" not in a) else 1
    return i


_WRAPPER_OPTS: dict[str, Collection[str]] = {
    "timeout": {"-s", "--signal", "-k", "--kill-after"},
    "nice": {"-n", "--adjustment"},
    "nohup": set(),
    "setsid": set(),
    "builtin": set(),
    "exec": {"-a"},
    "time": {"-f", "--format", "-o", "--output"},
    "stdbuf": {"-i", "-o", "-e", "--input", "--output", "--error"},
    "ionice": {"-c", "-n", "-p", "--class", "--classdata"},
    "unbuffer": set(),
    "xargs": _words(
        "-a -d -E -e -I -L -l -n -P -s --arg-file --delimiter --max-args --max-procs "
        "--max-lines --max-chars"
    ),
    "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "--user", "--group"},
    "doas": {"-u", "-C"},
    "pkexec": {"--user"},
    "env": {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"},
    "command": set(),
}


def strip_wrappers(words: list[str]) -> tuple[list[str], int, list[str]]:
    """(core command, index of its first word, wrappers removed on the way)."""
    i, wrappers = 0, list[str]()
    for _ in range(32):
        while i < len(words) and (_ASSIGN.match(words[i]) or words[i] in _RESERVED):
            i += 1
        if i >= len(words):
            return [], i, wrappers
        name = os.path.basename(words[i])
        if name == "busybox" and i + 1 < len(words) and not words[i + 1].startswith("-"):
            wrappers.append(name)
            i += 1
            continue
        if name not in _WRAPPER_OPTS:
            return words[i:], i, wrappers
        if name == "command" and any(a in ("-v", "-V") for a in words[i + 1 : i + 3]):
            return [], len(words), [*wrappers, name]  # a lookup, runs nothing
        if name == "env":
            split = _env_split_string(words[i + 1 :])
            if split is not None:
                core, _, more = strip_wrappers(split)
                return core, len(words), [*wrappers, name, *more]
        wrappers.append(name)
        j = _skip_opts(words, i + 1, _WRAPPER_OPTS[name])
        if name == "timeout" and j < len(words):
            j += 1  # the duration
        if name == "xargs" and j >= len(words):
            return ["echo"], len(words), wrappers  # xargs runs echo by default
        i = j
    return words[i:], i, wrappers


def _env_split_string(args: list[str]) -> list[str] | None:
    for k, a in enumerate(args):
        if a in ("-S", "--split-string") and k + 1 < len(args):
            return args[k + 1].split() + args[k + 2 :]
        if a.startswith("--split-string="):
            return a.split("=", 1)[1].split() + args[k + 1 :]
        if not a.startswith("-") and not _ASSIGN.match(a):
            return None
    return None


def _shell_script(core: list[str]) -> str | None:
    """The script of ``bash -c SCRIPT`` / ``sh -lc SCRIPT`` (None if not a -c call)."""
    i, has_c = 1, False
    while i < len(core):
        a = core[i]
        if a in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            i += 2
            continue
        if a == "--":
            i += 1
            break
        if not a.startswith(("-", "+")) or a in ("-", "+"):
            break
        has_c |= not a.startswith("--") and "c" in a[1:]
        i += 1
    return core[i] if has_c and i < len(core) else None


def reads_stdin_script(part: ShellPart) -> bool:
    core = part.core
    if part.program not in INTERPRETERS or _shell_script(core) is not None:
        return False
    operands = [a for a in core[1:] if not a.startswith("-") or a == "-"]
    return not operands or operands[0] in ("-", "/dev/stdin")


def literal_payload(upstream: list[ShellPart]) -> str | None:
    """What ``echo TEXT | base64 -d | ...`` prints, when it can be known without running it."""
    first = upstream[0] if upstream else None
    if first is None or first.dynamic_program:
        return None
    if first.program in ("echo", "printf"):
        text = " ".join(a for a in first.core[1:] if a not in ("-n", "-e", "-E", "--"))
    elif (
        first.program == "cat"
        and len(first.core) == 1
        and first.redirects[-1:]
        and (first.redirects[-1].heredoc is not None)
    ):
        text = first.redirects[-1].heredoc or ""
    else:
        return None
    for step in upstream[1:]:
        if step.program == "base64" and any(a in ("-d", "--decode", "-D") for a in step.core):
            try:
                text = base64.b64decode(text.strip(), validate=False).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                return None
        elif step.program == "rev" and len(step.core) == 1:
            text = "\n".join(line[::-1] for line in text.split("\n"))
        else:
            return None
    return text


class _Parser:
    def __init__(self) -> None:
        self.parts: list[ShellPart] = []
        self.problems: list[str] = []
        self.pipelines = count()

    def parse(self, src: str, depth: int) -> list[ShellPart]:
        if depth > MAX_DEPTH:
            self.problems.append("commands nested too deeply to check")
            return []
        if len(self.parts) > MAX_PARTS:
            self.problems.append("too many commands to check")
            return []
        try:
            tokens = tokenize(src)
        except ShellSyntaxError as exc:
            self.problems.append(f"could not parse {src[:80]!r}: {exc}")
            return self._crude(src, depth)
        made: list[ShellPart] = []
        pipeline = next(self.pipelines)
        cur: list[Word | Redirect] = []
        for k, tok in enumerate(tokens):
            if isinstance(tok, str):
                if tok == "(" and len(cur) == 1 and k + 1 < len(tokens) and tokens[k + 1] == ")":
                    cur = []  # ``name()`` of a function definition
                    continue
                made += self._part(cur, src, pipeline, depth)
                cur = []
                if tok not in ("|", "|&", "(", ")"):
                    pipeline = next(self.pipelines)
            else:
                cur.append(tok)
        made += self._part(cur, src, pipeline, depth)
        self._pipe_scripts(made, depth)
        return made

    def _crude(self, src: str, depth: int) -> list[ShellPart]:
        """Best-effort split of unparseable text, so deny rules and the guard still see it."""
        made = []
        for piece in re.split(r"[;&|\n()`]+|\$\(|<\(", src):
            words = re.sub(r"[\"'\\]", "", piece).split()
            if words:
                core, _, wrappers = strip_wrappers(words)
                made.append(
                    ShellPart(
                        words,
                        core,
                        wrappers,
                        [],
                        piece.strip(),
                        " ".join(core),
                        next(self.pipelines),
                        depth,
                    )
                )
        self.parts += made
        return made

    def _part(
        self, toks: list[Word | Redirect], src: str, pipeline: int, depth: int
    ) -> list[ShellPart]:
        words = [t for t in toks if isinstance(t, Word)]
        redirects = [t for t in toks if isinstance(t, Redirect)]
        if not toks:
            return []
        texts = [w.text for w in words]
        core, idx, wrappers = strip_wrappers(texts)
        start, end = toks[0].start, toks[-1].end
        raw_core = src[words[idx].start : end].strip() if idx < len(words) else ""
        part = ShellPart(
            texts, core, wrappers, redirects, src[start:end].strip(), raw_core, pipeline, depth
        )
        if idx < len(words) and core and core[0] == words[idx].text:
            part.dynamic_program = words[idx].dynamic or any(c in core[0] for c in "$`")
        if texts and texts[0] in _LOOP_HEADERS:
            part.core, part.transparent = [], True  # loop header: its words are data
        self.parts.append(part)
        made = [part]
        for k, w in enumerate(words):
            for sub in w.substitutions:
                inner = self.parse(sub, depth + 1)
                made += inner
                fetch = any(p.program in FETCHERS for p in inner)
                if fetch and k == idx:
                    part.fetch_in_program = True
                elif fetch:
                    part.fetch_in_args = True
        for r in redirects:
            for sub in r.target.substitutions if r.target else []:
                made += self.parse(sub, depth + 1)
            if r.heredoc is not None and part.program in INTERPRETERS:
                made += self.parse(r.heredoc, depth + 1)
                part.stdin_script_known = True
        made += self._nested(part, depth)
        return made

    def _nested(self, part: ShellPart, depth: int) -> list[ShellPart]:
        prog, core = part.program, part.core
        if prog in SHELLS and (script := _shell_script(core)) is not None:
            part.transparent = True
            return self.parse(script, depth + 1)
        if prog == "eval" and len(core) > 1:
            part.transparent = True
            return self.parse(" ".join(core[1:]), depth + 1)
        if prog == "su" and "-c" in core[:-1]:
            return self.parse(core[core.index("-c") + 1], depth + 1)
        if prog == "watch":
            j = _skip_opts(core, 1, {"-n", "--interval", "-d"})
            return self.parse(" ".join(core[j:]), depth + 1) if j < len(core) else []
        if prog == "find":
            made = []
            for k, a in enumerate(core):
                if a in ("-exec", "-execdir", "-ok", "-okdir"):
                    rest = core[k + 1 :]
                    stop = next((m for m, x in enumerate(rest) if x in (";", "+")), len(rest))
                    made += self.parse(" ".join(_requote(x) for x in rest[:stop]), depth + 1)
            return made
        return []

    def _pipe_scripts(self, made: list[ShellPart], depth: int) -> None:
        """``echo TEXT | sh``: judge TEXT as commands when it is a literal."""
        by_pipe: dict[int, list[ShellPart]] = {}
        for p in made:
            if p.depth == depth:
                by_pipe.setdefault(p.pipeline, []).append(p)
        for group in by_pipe.values():
            for k, p in enumerate(group[1:], 1):
                if reads_stdin_script(p) and not p.stdin_script_known:
                    payload = literal_payload(group[:k])
                    if payload is not None:
                        p.stdin_script_known = True
                        made += self.parse(payload, depth + 1)


def _requote(word: str) -> str:
    return (
        word if re.fullmatch(r"[\w@%+=:,./{}-]+", word) else "'" + word.replace("'", "'\\''") + "'"
    )


def normalize(command: str) -> str:
    """NFKC (fullwidth and other compatibility look-alikes) and ``$IFS`` as a space."""
    text = unicodedata.normalize("NFKC", command.replace("\r\n", "\n"))
    return _IFS.sub(" ", text)


def parse(command: str) -> ParsedCommand:
    invisible = find_invisible(command.replace("\r\n", "\n"))
    if len(command) > MAX_SOURCE:
        return ParsedCommand(command, [], ["command too long to check"], invisible)
    parser = _Parser()
    parser.parse(normalize(command), 0)
    return ParsedCommand(command, parser.parts, parser.problems, invisible)
