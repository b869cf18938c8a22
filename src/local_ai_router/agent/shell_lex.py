"""Shell tokenizer for :mod:`.shell_parse` (which splits, unwraps and judges the parts).

Reads a command the way a POSIX shell does: quotes, escapes, ANSI-C ``$'...'`` strings,
``$( )`` / backtick / ``<( )`` substitutions (collected, not run), ``${..}`` and
``$((..))``, redirections and here-docs. Malformed input raises
:class:`ShellSyntaxError`; nothing is ever executed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

__all__ = [
    "Redirect",
    "ShellSyntaxError",
    "Word",
    "find_invisible",
    "find_substitutions",
    "tokenize",
]

_REDIR = re.compile(r"(\d+|\{[A-Za-z_][A-Za-z0-9_]*\})?(<<<|<<-|<<|<>|<&|>>|>&|>\||&>>|&>|<|>)")
_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])")
_OPERATORS = ("&&", "||", ";;", ";&", "|&", ";", "|", "&", "(", ")")


class ShellSyntaxError(ValueError):
    pass


@dataclass(slots=True)
class Word:
    text: str  # after quote removal; substitutions stay as written (``$(...)``)
    start: int
    end: int
    quoted: bool = False
    dynamic: bool = False  # holds an expansion whose value is only known at run time
    substitutions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Redirect:
    op: str
    target: Word | None
    start: int
    end: int
    heredoc: str | None = None  # body of << / <<< (the shell reads it as stdin)


def find_invisible(text: str) -> list[str]:
    """Code points that render as nothing or reorder text (format, control, bidi)."""
    found = {
        f"U+{ord(ch):04X}"
        for ch in text
        if ch not in "\t\n" and unicodedata.category(ch) in ("Cf", "Cc", "Zl", "Zp", "Co")
    }
    return sorted(found)


_ANSI_C = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{1,4}|U[0-9A-Fa-f]{1,8}|[0-7]{1,3}|c.|.)")
_ANSI_SIMPLE = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "E": "\x1b",
    "f": "\f",
    "v": "\v",
}


def _ansi_decode(body: str) -> str:
    def one(m: re.Match[str]) -> str:
        s = m.group(1)
        if s[0] in "xuU" and len(s) > 1:
            return chr(min(int(s[1:], 16), 0x10FFFF))
        if s[0] in "01234567":
            return chr(int(s, 8) & 0xFF)
        if s[0] == "c" and len(s) == 2:
            return chr(ord(s[1]) & 0x1F)
        return _ANSI_SIMPLE.get(s, s)

    return _ANSI_C.sub(one, body)


class _Lexer:
    def __init__(self, src: str):
        self.src = src
        self.i = 0
        self.tokens: list[Word | Redirect | str] = []
        self.heredocs: list[tuple[Redirect, bool, str, bool]] = []

    def run(self) -> list[Word | Redirect | str]:
        src, n = self.src, len(self.src)
        while self.i < n:
            c = src[self.i]
            if c in " \t":
                self.i += 1
            elif src.startswith("\\\n", self.i):
                self.i += 2
            elif c == "#":
                nl = src.find("\n", self.i)
                self.i = n if nl < 0 else nl
            elif c == "\n":
                self.tokens.append("\n")
                self.i += 1
                self._read_heredocs()
            elif not self._redirect():
                op = next((o for o in _OPERATORS if src.startswith(o, self.i)), None)
                if op:
                    self.tokens.append(op)
                    self.i += len(op)
                else:
                    self.tokens.append(self._word())
        self._read_heredocs()
        return self.tokens

    def _redirect(self) -> bool:
        m = _REDIR.match(self.src, self.i)
        if not m or (m.group(2) in "<>" and self.src.startswith("(", m.end())):
            return False
        op, start = m.group(2), self.i
        self.i = m.end()
        while self.i < len(self.src) and self.src[self.i] in " \t":
            self.i += 1
        if self.i >= len(self.src) or self.src[self.i] in "\n;&|()<>":
            raise ShellSyntaxError(f"redirection {op!r} has no target")
        target = self._word()
        redirect = Redirect(op, target, start, self.i)
        if op in ("<<", "<<-"):
            self.heredocs.append((redirect, op == "<<-", target.text, target.quoted))
        elif op == "<<<":
            redirect.heredoc = target.text
        self.tokens.append(redirect)
        return True

    def _read_heredocs(self) -> None:
        src, n = self.src, len(self.src)
        for redirect, strip_tabs, delim, quoted in self.heredocs:
            lines: list[str] = []
            while self.i < n:
                nl = src.find("\n", self.i)
                line = src[self.i : n if nl < 0 else nl]
                self.i = n if nl < 0 else nl + 1
                line = line.lstrip("\t") if strip_tabs else line
                if line == delim:
                    break
                lines.append(line)
            redirect.heredoc = "\n".join(lines)
            if not quoted and redirect.target is not None:  # unquoted: $( ) in the body runs
                redirect.target.substitutions.extend(find_substitutions(redirect.heredoc, False))
        self.heredocs.clear()

    def _word(self) -> Word:
        src, n = self.src, len(self.src)
        word, out = Word("", self.i, self.i), []
        while self.i < n:
            c = src[self.i]
            if c in "<>" and src.startswith("(", self.i + 1):  # process substitution
                end = _match_close(src, self.i + 2, "(", ")")
                word.substitutions.append(src[self.i + 2 : end])
                word.dynamic = True
                out.append(src[self.i : end + 1])
                self.i = end + 1
            elif c == "(" and out and out[-1].endswith("="):  # array assignment a=(1 2)
                end = _match_close(src, self.i + 1, "(", ")")
                word.substitutions.extend(find_substitutions(src[self.i + 1 : end], True))
                out.append(src[self.i : end + 1])
                self.i = end + 1
            elif c in " \t\n;&|()<>":
                break
            elif c == "\\":
                if src.startswith("\\\n", self.i):
                    self.i += 2
                    continue
                out.append(src[self.i + 1 : self.i + 2])
                word.quoted = True
                self.i += 2
            elif c == "'":
                end = src.find("'", self.i + 1)
                if end < 0:
                    raise ShellSyntaxError("unterminated single quote")
                out.append(src[self.i + 1 : end])
                word.quoted = True
                self.i = end + 1
            elif src.startswith("$'", self.i):
                m = re.compile(r"((?:[^'\\]|\\.)*)'", re.S).match(src, self.i + 2)
                if not m:
                    raise ShellSyntaxError("unterminated $'...' string")
                out.append(_ansi_decode(m.group(1)))
                word.quoted = True
                self.i = m.end()
            elif c == '"':
                self.i += 1
                self._double_quoted(word, out)
                word.quoted = True
            elif c in "$`":
                self._expansion(word, out)
            else:
                out.append(c)
                self.i += 1
        word.text, word.end = "".join(out), self.i
        return word

    def _double_quoted(self, word: Word, out: list[str]) -> None:
        src, n = self.src, len(self.src)
        while self.i < n:
            c = src[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\" and self.i + 1 < n and src[self.i + 1] in '$`"\\\n':
                if src[self.i + 1] != "\n":
                    out.append(src[self.i + 1])
                self.i += 2
            elif c in "$`":
                self._expansion(word, out)
            else:
                out.append(c)
                self.i += 1
        raise ShellSyntaxError("unterminated double quote")

    def _expansion(self, word: Word, out: list[str]) -> None:
        src, i = self.src, self.i
        if src[i] == "`":
            end, inner = _backtick(src, i)
            word.substitutions.append(inner)
        elif src.startswith("$((", i):
            end = _match_close(src, i + 2, "(", ")")
            word.substitutions.extend(find_substitutions(src[i + 3 : end], True))
        elif src.startswith("$(", i):
            end = _match_close(src, i + 2, "(", ")")
            word.substitutions.append(src[i + 2 : end])
        elif src.startswith("${", i):
            end = _match_close(src, i + 2, "{", "}")
            word.substitutions.extend(find_substitutions(src[i + 2 : end], True))
        elif m := _VAR.match(src, i):
            end = m.end() - 1
        else:
            out.append("$")
            self.i += 1
            return
        word.dynamic = True
        out.append(src[i : end + 1])
        self.i = end + 1


def _backtick(src: str, i: int) -> tuple[int, str]:
    j, buf = i + 1, []
    while j < len(src):
        if src[j] == "\\" and j + 1 < len(src):
            buf.append(src[j + 1] if src[j + 1] in "`\\$" else src[j : j + 2])
            j += 2
        elif src[j] == "`":
            return j, "".join(buf)
        else:
            buf.append(src[j])
            j += 1
    raise ShellSyntaxError("unterminated backtick substitution")


def _match_close(src: str, pos: int, open_: str, close: str) -> int:
    """Index of the ``close`` that balances an ``open_`` just before ``pos``."""
    depth, j, n = 1, pos, len(src)
    while j < n:
        c = src[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            k = src.find("'", j + 1)
            if k < 0:
                raise ShellSyntaxError("unterminated single quote")
            j = k + 1
            continue
        if c == '"':
            j += 1
            while j < n and src[j] != '"':
                if src[j] == "\\":
                    j += 1
                elif src.startswith("$(", j):
                    j = _match_close(src, j + 2, "(", ")")
                j += 1
            if j >= n:
                raise ShellSyntaxError("unterminated double quote")
        elif c == "`":
            j = _backtick(src, j)[0]
        elif c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise ShellSyntaxError(f"unterminated {open_!r}...{close!r} substitution")


def find_substitutions(text: str, quotes: bool) -> list[str]:
    """``$( )`` and backtick bodies inside ``text`` (a here-doc body, ``${..}``, ``$((..))``)."""
    found, j, n = [], 0, len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
        elif c == "'" and quotes:
            k = text.find("'", j + 1)
            j = n if k < 0 else k + 1
        elif text.startswith("$(", j) and not text.startswith("$((", j):
            end = _match_close(text, j + 2, "(", ")")
            found.append(text[j + 2 : end])
            j = end + 1
        elif c == "`":
            end, inner = _backtick(text, j)
            found.append(inner)
            j = end + 1
        else:
            j += 1
    return found


def tokenize(src: str) -> list[Word | Redirect | str]:
    """Words, redirections and operator strings (``"|"``, ``"&&"``, ``"\\n"``...) of ``src``."""
    return _Lexer(src).run()
