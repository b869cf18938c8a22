"""The files a shell command writes, so that Edit/Write path rules also bind ``run_shell``.

Why: ``Edit(/.mcp.json)`` (see ``policy_setup.PROTECTED_FILE_RULES``) and users'
``Edit(secrets/**)`` deny rules guard the file tools, but ``echo {...} > .mcp.json``,
``tee``, ``cp x .mcp.json`` or ``sed -i`` would write the same files through the
shell. :func:`written_paths` finds, without running anything, what each part of a
parsed command writes: output redirections, and the destinations of tee, cp, mv,
install, ln, rsync, dd, truncate, sed -i, perl -i, sort -o, curl -o/-O and wget.
Paths are resolved against the workspace and every directory an earlier ``cd`` or
``pushd`` may have moved to (``~``, ``$PWD``, ``..`` and braces are expanded). Targets
only known at run time (``> "$f"``, ``tar x``, ``python -c``) are not reported: this
closes the obvious routes, it is not a sandbox.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .shell_parse import ParsedCommand, ShellPart

if TYPE_CHECKING:
    from .permissions import Rule

__all__ = ["Target", "write_rule_hit", "written_paths"]

_WRITE_OPS = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
_HOME = re.compile(r"^(~|\$HOME(?![A-Za-z0-9_])|\$\{HOME\})(?=/|$)")
_PWD = re.compile(r"\$\{PWD\}|\$PWD(?![A-Za-z0-9_])|\$\(pwd\)|`pwd`")
_BRACE = re.compile(r"\{([^{}]*,[^{}]*)\}")
_MAX_BASES = 8
_MAX_WORDS = 64


@dataclass(frozen=True, slots=True)
class Target:
    """A path a command part may write (lexical and symlink-resolved forms)."""

    forms: tuple[str, ...]
    tree: bool = False  # may put a whole directory there (``mv dir x``, ``cp -r``, ``ln -s``)
    glob: bool = False  # has wildcards the shell may expand to an existing file
    anywhere: bool = False  # ``forms[0]`` is relative to a directory only known at run time


# --------------------------------------------------------------------------- options

_LongOpts = frozenset[str]


def _words(text: str) -> _LongOpts:
    return frozenset(text.split())


# Per program: short options that take a value, long options that take a separate value.
_CP = ("tS", _words("--target-directory --suffix"))
_OPTS: dict[str, tuple[str, _LongOpts]] = {
    "tee": ("", frozenset()),
    "truncate": ("sr", _words("--size --reference")),
    "cp": _CP,
    "mv": _CP,
    "ln": _CP,
    "install": ("gmoSt", _words("--group --mode --owner --target-directory --suffix")),
    "rsync": (
        "eBfTM",
        _words(
            "--exclude --include --filter --rsh --files-from --exclude-from --include-from "
            "--temp-dir --partial-dir --compare-dest --copy-dest --link-dest --backup-dir "
            "--suffix --chmod --log-file --password-file --rsync-path"
        ),
    ),
    "sed": ("efl", _words("--expression --file --line-length")),
    "perl": ("eEI", frozenset()),
    "sort": (
        "okStT",
        _words(
            "--output --key --field-separator --buffer-size --temporary-directory --parallel "
            "--files0-from"
        ),
    ),
    "curl": (
        "AbcCdDeEFHKmoPQrtTuUwxXYyz",
        _words(
            "--output --dump-header --cookie-jar --header --data --request --user --user-agent "
            "--referer --form --cookie --config --upload-file --output-dir --url"
        ),
    ),
    "wget": (
        "OoaPeUTtwiQlADIXRBn",
        _words(
            "--output-document --output-file --append-output --directory-prefix --execute "
            "--user-agent --tries --timeout --input-file --header --user --password"
        ),
    ),
}
_ATTACHED_ONLY = {"sed": "i", "perl": "i0lxCdDFMm"}  # optional values glued to the letter
_PROGRAM_ALIASES = {"gsed": "sed", "gcp": "cp", "gmv": "mv", "ginstall": "install"}


def _long_name(name: str, known: _LongOpts) -> str:
    """getopt_long accepts any unambiguous prefix (``--target=dir``)."""
    if name in known or len(name) < 3:
        return name
    hits = [k for k in known if k.startswith(name)]
    return hits[0] if len(hits) == 1 else name


def _scan(args: list[str], prog: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(options as (name, value), operands), read the way GNU getopt_long reads them."""
    short, known = _OPTS[prog]
    attached = _ATTACHED_ONLY.get(prog, "")
    opts: list[tuple[str, str]] = []
    operands: list[str] = []
    i = 0
    while i < len(args):
        a, i = args[i], i + 1
        if a == "--":
            operands += args[i:]
            break
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            name = _long_name(name, known)
            if not eq and name in known and i < len(args):
                value, i = args[i], i + 1
            opts.append((name, value))
        elif a.startswith("-") and len(a) > 1:
            for k, c in enumerate(a[1:], 1):
                if c in attached or c in short:
                    value = a[k + 1 :]
                    if not value and c in short and i < len(args):
                        value, i = args[i], i + 1
                    opts.append(("-" + c, value))
                    break
                opts.append(("-" + c, ""))
        else:
            operands.append(a)
    return opts, operands


def _values(opts: list[tuple[str, str]], *names: str) -> list[str]:
    return [v for n, v in opts if n in names and v]


# --------------------------------------------------------------------------- programs

Words = list[tuple[str, bool]]  # (path as written, may hold a directory tree)


def _copy_targets(prog: str, opts: list[tuple[str, str]], operands: list[str]) -> Words:
    names = {n for n, _ in opts}
    recursive = bool(names & {"-r", "-R", "-a", "--recursive", "--archive"})
    tree = prog in ("mv", "ln", "rsync") or (prog == "cp" and recursive)
    target_dir = _values(opts, "-t", "--target-directory")[-1:]
    if prog == "install" and "-d" in names:
        return [(o, False) for o in operands]
    if target_dir:
        dest, sources = target_dir[0], operands
    elif len(operands) >= 2:
        dest, sources = operands[-1], operands[:-1]
    elif prog == "ln" and operands:
        dest, sources = ".", operands  # ``ln -s x/.mcp.json`` makes ./.mcp.json
    else:
        return []
    out = [(dest, tree)] + [(_join(dest, _basename(s)), tree) for s in sources]
    if prog == "mv":  # the sources disappear: that edits them too
        out += [(s, True) for s in sources]
    return out


def _in_place_targets(prog: str, opts: list[tuple[str, str]], operands: list[str]) -> Words:
    names = {n for n, _ in opts}
    if not names & {"-i", "--in-place"}:
        return []
    scripted = names & ({"-e", "-E"} if prog == "perl" else {"-e", "--expression", "-f", "--file"})
    return [(o, False) for o in (operands if scripted else operands[1:])]


def _fetch_targets(prog: str, opts: list[tuple[str, str]], operands: list[str]) -> Words:
    names = {n for n, _ in opts}
    if prog == "curl":
        out = _values(opts, "-o", "--output", "-D", "--dump-header", "-c", "--cookie-jar")
        urls = operands + _values(opts, "--url")
        if names & {"-O", "--remote-name", "--remote-name-all"}:
            folder = (_values(opts, "--output-dir") or ["."])[-1]
            out += [_join(folder, _url_name(u)) for u in urls]
        return [(o, False) for o in out]
    out = _values(opts, "-O", "--output-document", "-o", "--output-file", "-a",
                  "--append-output")  # fmt: skip
    if not _values(opts, "-O", "--output-document"):
        prefix = (_values(opts, "-P", "--directory-prefix") or ["."])[-1]
        out += [_join(prefix, _url_name(u)) for u in operands]
    return [(o, False) for o in out]


def _program_targets(part: ShellPart) -> Words:
    if part.dynamic_program or not part.core:
        return []
    prog = _PROGRAM_ALIASES.get(part.program, part.program)
    args = part.core[1:]
    if prog == "dd":
        return [(a[3:], False) for a in args if a.startswith("of=")]
    if prog not in _OPTS:
        return []
    opts, operands = _scan(args, prog)
    if prog in ("tee", "truncate"):
        return [(o, False) for o in operands]
    if prog in ("cp", "mv", "ln", "install", "rsync"):
        return _copy_targets(prog, opts, operands)
    if prog in ("sed", "perl"):
        return _in_place_targets(prog, opts, operands)
    if prog == "sort":
        return [(o, False) for o in _values(opts, "-o", "--output")]
    return _fetch_targets(prog, opts, operands)


def _redirect_targets(part: ShellPart) -> Words:
    out: Words = []
    for r in part.redirects:
        text = r.target.text if r.target else ""
        if r.op in _WRITE_OPS and text and not (r.op == ">&" and (text.isdigit() or text == "-")):
            out.append((text, False))
    return out


# --------------------------------------------------------------------------- paths


def _basename(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path


def _join(directory: str, name: str) -> str:
    return name if name.startswith("/") else f"{directory.rstrip('/') or '/'}/{name}"


def _url_name(url: str) -> str:
    return os.path.basename(urlsplit(url).path) or "index.html"


def _braces(word: str, limit: int = _MAX_WORDS) -> list[str]:
    """Bash brace expansion of comma lists (``.mcp{.json,}``).

    Past ``limit`` words, each list becomes a ``*`` wildcard instead (still checked).
    """
    done: list[str] = []
    todo = [word]
    while todo:
        w = todo.pop()
        m = _BRACE.search(w)
        if m is None:
            done.append(w)
        elif len(done) + len(todo) + m.group(1).count(",") + 1 > limit:
            return [_BRACE.sub("*", word)]
        else:
            todo += [w[: m.start()] + alt + w[m.end() :] for alt in m.group(1).split(",")]
    return done


def _resolve(word: str, base: str, home: str) -> str | None:
    """Absolute, normalised path of ``word`` written in ``base``; None if only known at run time."""
    text = _PWD.sub(lambda _m: base, _HOME.sub(lambda _m: home, word))
    if not text or "\x00" in text or text.startswith("~") or any(c in text for c in "$`"):
        return None
    return os.path.normpath(os.path.join(base, text))


def _real(path: str, dirs: dict[str, str]) -> str:
    """``os.path.realpath``, with each directory resolved once (commands name many files)."""
    if os.path.islink(path):
        return os.path.realpath(path)
    parent, name = os.path.split(path)
    if parent not in dirs:
        dirs[parent] = os.path.realpath(parent)
    return os.path.join(dirs[parent], name)


def _tail(word: str) -> str | None:
    """A relative ``word`` from an unknown directory, after its last ``..``; None if absolute."""
    text = _PWD.sub(".", word)
    if _HOME.match(text) or text.startswith("/") or "\x00" in text or "$" in text or "`" in text:
        return None
    parts = os.path.normpath(text).split("/") if text else []
    while ".." in parts:
        parts = parts[parts.index("..") + 1 :]
    tail = "/".join(parts)
    return None if tail in ("", ".") else tail


def _targets(words: Words, bases: Sequence[str], home: str, anywhere: bool) -> list[Target]:
    found: dict[tuple[str, ...], Target] = {}
    dirs: dict[str, str] = {}
    for word, tree in words:
        for w in _braces(word):
            glob = any(c in w for c in "*?[")
            tail = _tail(w) if anywhere else None
            if tail is not None:
                found[(tail, "")] = Target((tail,), tree, glob, anywhere=True)
            for base in bases:
                path = _resolve(w, base, home)
                if path is None:
                    continue
                forms = tuple(dict.fromkeys([path, _real(path, dirs)]))
                old = found.get(forms)
                found[forms] = Target(forms, tree or bool(old and old.tree), glob)
    return list(found.values())


def _cd_dir(part: ShellPart, home: str) -> str | None:
    """Where a ``cd``/``pushd`` part goes (None: not one, or back to a directory seen before)."""
    if part.program not in ("cd", "pushd"):
        return None
    if part.dynamic_program:
        return "$"  # unknown
    operands = [a for a in part.core[1:] if not a.startswith("-") or a == "-"]
    if not operands:
        return home
    return None if operands[0] in ("-", "") or operands[0].startswith("+") else operands[0]


def _env_chdir(part: ShellPart) -> bool:
    """``env -C dir cmd`` runs ``cmd`` elsewhere."""
    flags = ("-C", "--chdir")
    return "env" in part.wrappers and any(
        w in flags or w.startswith("--chdir=") for w in part.words
    )


def written_paths(parsed: ParsedCommand, workspace: str, home: str) -> list[list[Target]]:
    """For each part of ``parsed``, the paths it may write.

    Every ``cd`` seen so far adds a possible working directory (the workspace stays one:
    ``cd x || true`` may fail), so ``cd .claude && tee settings.json`` is caught. After a
    ``cd`` to a directory known only at run time, relative targets may be anywhere.
    """
    bases, anywhere = [workspace], False
    out: list[list[Target]] = []
    for part in parsed.parts:
        words = _redirect_targets(part) + _program_targets(part)
        out.append(_targets(words, bases, home, anywhere or _env_chdir(part)))
        dest = _cd_dir(part, home)
        if dest is None:
            continue
        moved = [_resolve(dest, b, home) for b in bases]
        known = [m for m in moved if m is not None]
        grown = list(dict.fromkeys([*bases, *known]))
        anywhere |= len(known) < len(moved) or len(grown) > _MAX_BASES
        bases = grown if len(grown) <= _MAX_BASES else bases
    return out


# --------------------------------------------------------------------------- rules


def _ancestors(path: str) -> list[str]:
    out = [path]
    while out[-1] != os.path.dirname(out[-1]):
        out.append(os.path.dirname(out[-1]))
    return out


def _covers(rule: Rule, target: Target, workspace: str) -> bool:
    spec = rule.path
    if spec is None:
        return False
    forms, literal = target.forms, spec.literal
    if target.anywhere:  # unknown directory: try those above the rule's path (the target
        dirs = _ancestors(literal)[1:] if literal else [spec.base]  # must name it)
        forms = tuple(os.path.normpath(os.path.join(d, forms[0])) for d in dirs)
    if any(spec.matches(p) for p in forms):
        return True
    if literal is None:
        return False
    for p in forms:
        if target.glob and fnmatch.fnmatchcase(literal, p):
            return True
        inside = literal == p or literal.startswith(p.rstrip("/") + "/")
        above_workspace = (workspace + "/").startswith(p.rstrip("/") + "/")
        if target.tree and inside and not above_workspace:
            return True
    return False


def write_rule_hit(
    rules: Iterable[Rule], targets: Sequence[Target], workspace: str
) -> tuple[Rule, str] | None:
    """The first Edit/Write/MultiEdit path rule covering a target, with that target's path."""
    for rule in rules:
        if rule.path is None or not (rule.names("write_file") or rule.names("edit_file")):
            continue
        for t in targets:
            if _covers(rule, t, workspace):
                path = t.forms[0]
                if t.anywhere:
                    return rule, f"{path} (from a directory known only at run time)"
                inside = path.startswith(workspace + "/")
                return rule, os.path.relpath(path, workspace) if inside else path
    return None
