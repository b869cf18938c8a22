"""Permission rules, modes and decisions: the gate every action passes.

Rules use Claude Code's syntax so that users' settings work unchanged:
``Tool`` or ``Tool(specifier)``, with Claude Code's tool names as aliases of
ours (``Bash`` = run_shell, ``Read``/``Edit``/``Write``/``Glob``/``Grep``/
``LS`` = the file tools, ``Agent``/``Task`` = spawn_agents). Order: deny rules,
then (plan mode's read-only cap,) ask rules, the built-in guard list, allow
rules, and finally the mode. Shell commands are judged part by part (see
:mod:`.shell_parse`): any denied part denies, any asking part asks, and only a
command whose every part is allowed runs without asking. Edit/Write path rules also
judge the files a command writes (``> .mcp.json``, ``tee``, ``cp``...; :mod:`.shell_writes`).

An allow rule lifts a guard hit only when the rule itself names the risky
command (``Bash(git push --force:*)`` lifts the force-push ask; ``Bash`` or
``Bash(echo:*)`` lift nothing), so a broad allow never unlocks ``rm -rf /``.

:class:`.gate.PermissionGate` combines a policy with PreToolUse hooks.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .shell_guard import GuardHit, git_subcommand, guard, is_read_only
from .shell_parse import ShellPart, parse
from .shell_writes import Target, write_rule_hit, written_paths

__all__ = [
    "MODES",
    "Decision",
    "PermissionPolicy",
    "Rule",
    "is_looser",
    "parse_rule",
    "stricter_mode",
    "tool_kind",
]

DecisionValue = Literal["allow", "deny", "ask"]
DecidedBy = Literal["rule", "mode", "hook", "user", "default", "guard"]
MODES = ("auto", "ask", "acceptEdits", "plan", "bypassPermissions")
_MODE_ALIASES = {"default": "ask"}  # Claude Code's name for its asking mode
_STRICT_ORDER = ("plan", "ask", "acceptEdits", "auto", "bypassPermissions")  # strictest first


def stricter_mode(current: str, requested: str | None) -> str:
    """The mode a subagent runs in: its definition's, but never looser than its parent's.

    Claude Code lets a subagent definition loosen the mode; here definitions can come
    from a cloned repository (``.claude/agents/``), so one asking for
    ``bypassPermissions`` under a parent in ``ask`` or ``plan`` must not get it.
    """
    if not requested:
        return current
    return min(_known_mode(current), _known_mode(requested), key=_STRICT_ORDER.index)


def is_looser(mode: str, than: str) -> bool:
    """Whether ``mode`` allows more than ``than`` (``default`` counts as ``ask``)."""
    order = _STRICT_ORDER.index
    return order(_known_mode(mode)) > order(_known_mode(than))


def _known_mode(mode: str) -> str:
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"unknown permission mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


READ_TOOLS = frozenset(
    {"read_file", "list_directory", "search_files", "git_status", "git_diff", "git_log",
     "list_skills", "search_skills", "read_skill", "task_complete"}
)  # fmt: skip
WRITE_TOOLS = frozenset({"write_file", "edit_file"})
FILE_READ_TOOLS = ("read_file", "list_directory", "search_files")
# Claude Code's names -> ours, and which family of specifier they take.
_ALIASES: dict[str, tuple[tuple[str, ...], str]] = {
    "Bash": (("run_shell",), "bash"),
    "run_shell": (("run_shell",), "bash"),
    "Read": (FILE_READ_TOOLS, "path"),
    "Glob": (("search_files",), "path"),
    "Grep": (("search_files",), "path"),
    "LS": (("list_directory",), "path"),
    "Edit": (("write_file", "edit_file"), "path"),
    "Write": (("write_file",), "path"),
    "MultiEdit": (("edit_file",), "path"),
    "WebFetch": (("web_fetch", "browser_open"), "domain"),
    "Agent": (("spawn_agents",), "agent"),
    "Task": (("spawn_agents",), "agent"),
    **{name: ((name,), "path") for name in (*FILE_READ_TOOLS, "write_file", "edit_file")},
    "spawn_agents": (("spawn_agents",), "agent"),
}
_PRIVILEGE = frozenset({"sudo", "doas", "pkexec"})
_RULE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_*.-]*)\s*(?:\((.*)\))?\s*$", re.S)


def tool_kind(tool: str) -> Literal["read", "write", "shell", "other"]:
    """What a tool touches: read, write, shell, or other (git mutations, agents, MCP)."""
    if tool in READ_TOOLS:
        return "read"
    if tool in WRITE_TOOLS:
        return "write"
    return "shell" if tool == "run_shell" else "other"


@dataclass(frozen=True, slots=True)
class Decision:
    decision: DecisionValue
    by: DecidedBy
    reason: str
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "by": self.by, "reason": self.reason, "rule": self.rule}


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class _BashSpec:
    kind: Literal["exact", "prefix", "wildcard"]
    text: str
    regex: re.Pattern[str] | None
    literal: str  # the text before any wildcard: what the rule explicitly names

    def matches(self, command: str) -> bool:
        if self.kind == "exact":
            return command == self.text
        if self.kind == "prefix":
            return command == self.text or command.startswith(self.text + " ")
        return bool(self.regex and self.regex.fullmatch(command))


def _bash_spec(spec: str) -> _BashSpec:
    s = " ".join(spec.split())
    body = s[:-2] if s.endswith(":*") else s
    stars = [m.start() for m in re.finditer(r"(?<!\\)\*", body)]
    if ":*" in body.replace("\\*", ""):
        raise ValueError("':*' may only end a Bash specifier")
    if s.endswith(":*") and not stars:
        text = body.rstrip().replace("\\*", "*")
        return _BashSpec("prefix", text, None, text)
    if not stars:
        return _BashSpec("exact", s.replace("\\*", "*"), None, s.replace("\\*", "*"))
    pieces = re.split(r"(?<!\\)\*", body)
    literal = pieces[0].replace("\\*", "*").strip()
    if len(pieces) == 2 and pieces[0].endswith(" ") and pieces[1] == "":
        pattern = re.escape(pieces[0].rstrip().replace("\\*", "*")) + "(?: .*)?"  # `ls *`
    else:
        pattern = ".*".join(re.escape(p.replace("\\*", "*")) for p in pieces)
    return _BashSpec("wildcard", s, re.compile(pattern, re.S), literal)


def _glob_regex(pat: str) -> str:
    out, i = [], 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        end = pat.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif end > 0:
            body = pat[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        elif c == "\\" and i + 1 < len(pat):
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _PathSpec:
    base: str
    regex: re.Pattern[str]
    literal: str | None = None  # anchored rules: the absolute path before any wildcard

    def matches(self, path: str) -> bool:
        """gitignore semantics: the path or any directory above it (below ``base``) matches."""
        prefix = self.base.rstrip("/") + "/"
        if path != self.base and not path.startswith(prefix):
            return False
        rel = path[len(prefix) :] if path != self.base else ""  # both are normalised
        parts = [] if rel in ("", ".") else rel.split("/")
        candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))] or [""]
        return any(self.regex.fullmatch(c) for c in candidates)


def _path_spec(spec: str, workspace: str, home: str) -> _PathSpec:
    s = spec.strip()
    if s.startswith("//"):
        base, pat, anchored = "/", s[2:], True
    elif s == "~" or s.startswith("~/"):
        base, pat, anchored = home, s[2:], True
    elif s.startswith(("/", "./")):
        base, pat, anchored = workspace, s[1 if s.startswith("/") else 2 :], True
    else:
        base, pat, anchored = workspace, s, "/" in s.rstrip("/")
    while pat.startswith("../"):
        base, pat = os.path.dirname(base.rstrip("/")) or "/", pat[3:]
    pat = pat.strip("/")
    if not pat or pat == "**":
        return _PathSpec(base, re.compile(".*", re.S), base)
    body = _glob_regex(pat)
    head = re.split(r"[*?\[\\]", pat, maxsplit=1)
    literal = os.path.join(base, pat if len(head) == 1 else head[0].rpartition("/")[0])
    regex = re.compile(body if anchored else "(?:.*/)?" + body, re.S)
    return _PathSpec(base, regex, os.path.normpath(literal) if anchored else None)


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed permission rule."""

    text: str
    tool: str
    tools: tuple[str, ...] | None  # our names it covers; None: match ``name_glob``
    name_glob: str | None
    family: str  # bash, path, agent, other
    spec: str | None
    bash: _BashSpec | None = None
    path: _PathSpec | None = None

    @property
    def bare(self) -> bool:
        return self.spec is None

    def names(self, tool: str) -> bool:
        if self.tools is not None:
            return tool in self.tools
        return bool(self.name_glob and fnmatch.fnmatchcase(tool, self.name_glob))


def parse_rule(text: object, *, workspace: Path | str = ".", home: str | None = None) -> Rule:
    """A :class:`Rule` from ``Tool`` / ``Tool(specifier)``; ValueError naming the rule if not."""
    if not isinstance(text, str):
        raise ValueError(f"permission rule must be a string, got {type(text).__name__}: {text!r}")
    m = _RULE.match(text)
    if not m:
        raise ValueError(
            f"invalid permission rule {text!r}: expected Tool or Tool(specifier), "
            "e.g. Bash(npm run test:*), Read(./secrets/**), mcp__server__tool"
        )
    tool, spec = m.group(1), m.group(2)
    try:
        return _build_rule(text, tool, spec, str(workspace), home or os.path.expanduser("~"))
    except ValueError as exc:
        raise ValueError(f"invalid permission rule {text!r}: {exc}") from None


def _build_rule(text: str, tool: str, spec: str | None, workspace: str, home: str) -> Rule:
    if spec is not None and not spec.strip():
        raise ValueError("empty specifier; drop the parentheses to match every call")
    if spec is not None and spec.strip() in ("*", "**"):
        spec = None
    if tool.startswith("mcp__"):
        if spec is not None:
            raise ValueError("MCP rules take no specifier (use mcp__server or mcp__server__tool)")
        server, _, name = tool[5:].partition("__")
        if not server or "*" in server:
            raise ValueError(
                "name the MCP server: mcp__server, mcp__server__* or mcp__server__tool"
            )
        glob = f"mcp__{server}__*" if name in ("", "*") else tool
        return Rule(text, tool, None, glob, "other", None)
    if "*" in tool:
        if spec is not None:
            raise ValueError("a wildcard tool name takes no specifier")
        return Rule(text, tool, None, tool, "other", None)
    tools, family = _ALIASES.get(tool, ((tool,), "other"))
    rule = Rule(text, tool, tools, None, family, spec)
    if spec is None:
        return rule
    if family == "bash":
        return replace(rule, bash=_bash_spec(spec))
    if family == "path":
        if "\x00" in spec:
            raise ValueError("path specifier contains a NUL byte")
        return replace(rule, path=_path_spec(spec, workspace, home))
    return rule  # agent names; other tools' specifiers (WebFetch(domain:..)) match nothing here


# --------------------------------------------------------------------------- policy


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[\\])", r"\\\1", text)


def _collapse(text: str) -> str:
    return " ".join(text.split())


@dataclass(slots=True)
class _PartView:
    """The strings a shell part can be matched as (wrapped and unwrapped, raw and parsed)."""

    any_forms: set[str]
    core_forms: set[str]
    full_forms: set[str]
    wrappers: tuple[str, ...] = ()

    @classmethod
    def of(cls, part: ShellPart) -> _PartView:
        core = {_collapse(part.raw_core), _collapse(part.text)}
        if part.core:  # `/usr/bin/git push` and `git -C dir push` are still `git push`
            core.add(_collapse(" ".join([part.program, *part.core[1:]])))
            if part.program == "git":
                sub, rest, _ = git_subcommand(part.core)
                core.add(_collapse(" ".join(["git", sub, *rest])))
        core -= {""}
        full = {_collapse(part.raw), _collapse(" ".join(part.words))} - {""}
        return cls(core | full, core, full, tuple(part.wrappers))


class PermissionPolicy:
    """Rules + guard + mode. Pure and synchronous: no hooks, no I/O beyond path resolution."""

    def __init__(
        self,
        *,
        mode: str = "auto",
        allow: Iterable[str] = (),
        ask: Iterable[str] = (),
        deny: Iterable[str] = (),
        workspace: Path | str,
        guard: bool = True,
        home: str | None = None,
    ):
        mode = _MODE_ALIASES.get(mode, mode)
        if mode not in MODES:
            raise ValueError(f"unknown permission mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode
        self.workspace = os.path.realpath(workspace)
        self.home = os.path.normpath(home or os.path.expanduser("~"))
        self.guard_enabled = guard
        self._sources = {"allow": list(allow), "ask": list(ask), "deny": list(deny)}
        self._rules = {k: [self._parse(t) for t in v] for k, v in self._sources.items()}
        self._session_allow: list[Rule] = []
        self._literal_hits: dict[str, frozenset[str]] = {}

    def _parse(self, text: object) -> Rule:
        return parse_rule(text, workspace=self.workspace, home=self.home)

    def with_mode(self, mode: str) -> PermissionPolicy:
        """The same rules under another mode (a subagent's ``permissionMode``)."""
        clone = PermissionPolicy(
            mode=mode, workspace=self.workspace, guard=self.guard_enabled, home=self.home,
            **self._sources,
        )  # fmt: skip
        clone._session_allow = list(self._session_allow)
        return clone

    # ----------------------------------------------------------------- public API

    def is_tool_offered(self, tool: str) -> bool:
        """False when a bare deny rule names the tool: the model never sees it."""
        return not any(r.bare and r.names(tool) for r in self._rules["deny"])

    def add_session_allow(self, *rules: str) -> None:
        """Allow rules for the rest of the session ("always allow" answers)."""
        self._session_allow.extend(self._parse(t) for t in rules)

    def remember(self, tool: str, args: Mapping[str, Any]) -> list[str]:
        """Add (and return) the session allow rules that cover exactly this call."""
        rules = self.rules_for(tool, args)
        self.add_session_allow(*rules)
        return rules

    def rules_for(self, tool: str, args: Mapping[str, Any]) -> list[str]:
        """The narrowest allow rules covering this call (one per shell command part)."""
        if tool == "run_shell":
            parsed = parse(str(args.get("command") or ""))
            texts = [_collapse(p.raw_core) for p in parsed.parts if not p.transparent and p.core]
            return list(dict.fromkeys(f"Bash({t.replace('*', chr(92) + '*')})" for t in texts))
        if tool in WRITE_TOOLS or tool in FILE_READ_TOOLS:
            path = self._paths(args)[0]
            head = "Edit" if tool in WRITE_TOOLS else "Read"
            if path == self.workspace or path.startswith(self.workspace + "/"):
                rel = os.path.relpath(path, self.workspace)
                return [f"{head}(/{'' if rel == '.' else _escape_glob(rel)})"]
            return [f"{head}(/{_escape_glob(path)})"]  # //abs/path
        return [tool]

    def read_denied(self, path: str | Path) -> bool:
        """Whether a deny rule covers reading ``path`` (for search tools filtering results)."""
        full = os.path.normpath(os.path.join(self.workspace, str(path)))
        return any(
            r.path is not None and r.path.matches(full) and r.names("read_file")
            for r in self._rules["deny"]
        )

    def evaluate(self, tool: str, args: Mapping[str, Any] | None) -> Decision:
        """Rules, guard and mode (no hooks)."""
        args = args if isinstance(args, Mapping) else {}
        decision = self._shell(args) if tool == "run_shell" else self._tool(tool, args)
        if decision.decision == "ask" and self.mode == "bypassPermissions":
            return replace(decision, decision="allow", reason=decision.reason + " (not asked: "
                           "bypassPermissions)")  # fmt: skip
        return decision

    # ----------------------------------------------------------------- internals

    def _allow_rules(self) -> list[Rule]:
        return self._rules["allow"] + self._session_allow

    def _paths(self, args: Mapping[str, Any]) -> list[str]:
        raw = args.get("path")
        text = raw if isinstance(raw, str) and raw.strip() else "."
        text = os.path.expanduser(text.strip())
        lexical = os.path.normpath(os.path.join(self.workspace, text))
        return list(dict.fromkeys([lexical, os.path.realpath(lexical)]))

    def _rule_matches(self, rule: Rule, tool: str, args: Mapping[str, Any], *, allow: bool
                      ) -> bool:  # fmt: skip
        if not rule.names(tool):
            return False
        if rule.bare:
            return True
        if rule.path is not None:
            hits = [rule.path.matches(p) for p in self._paths(args)]
            return all(hits) if allow else any(hits)
        if rule.family == "domain":  # WebFetch(domain:example.com): it and its subdomains
            host = (urlsplit(str(args.get("url") or "")).hostname or "").rstrip(".")
            want = (rule.spec or "").strip().removeprefix("domain:").removeprefix("*.").lower()
            return bool(host) and (host == want or host.endswith("." + want))
        if rule.family == "agent":
            tasks = args.get("tasks")
            tasks = tasks if isinstance(tasks, list) else []
            names = [t.get("agent") for t in tasks if isinstance(t, dict)]
            hits = [n == rule.spec.strip() for n in names] if rule.spec else []
            return bool(hits) and (all(hits) if allow else any(hits))
        return False  # specifier of a family we cannot check: never matches

    def _tool(self, tool: str, args: Mapping[str, Any]) -> Decision:
        for r in self._rules["deny"]:
            if self._rule_matches(r, tool, args, allow=False):
                return Decision("deny", "rule", f"denied by rule {r.text}", r.text)
        if self.mode == "plan" and not self._plan_ok(tool):
            return Decision("deny", "mode", f"plan mode is read-only: {tool} is not allowed")
        for r in self._rules["ask"]:
            if self._rule_matches(r, tool, args, allow=False):
                return Decision("ask", "rule", f"rule {r.text} asks for approval", r.text)
        for r in self._allow_rules():
            if self._rule_matches(r, tool, args, allow=True):
                return Decision("allow", "rule", f"allowed by rule {r.text}", r.text)
        return self._mode_tool(tool)

    @staticmethod
    def _plan_ok(tool: str) -> bool:
        return tool in READ_TOOLS or tool == "spawn_agents"

    def _mode_tool(self, tool: str) -> Decision:
        kind, mode = tool_kind(tool), self.mode
        if kind == "read" or mode in ("auto", "bypassPermissions") or tool == "spawn_agents":
            return Decision("allow", "mode", f"{mode} mode allows {tool}")
        if kind == "write" and mode == "acceptEdits":
            return Decision("allow", "mode", "acceptEdits mode allows edits")
        return Decision("ask", "mode", f"{mode} mode asks before {tool}")

    # ----------------------------------------------------------------- shell

    def _shell(self, args: Mapping[str, Any]) -> Decision:
        command = args.get("command")
        parsed = parse(command if isinstance(command, str) else "")
        if parsed.invisible:
            return Decision(
                "deny",
                "guard",
                "the command contains invisible or control "
                f"characters ({', '.join(parsed.invisible)}); retype it in plain text",
            )
        hits = guard(parsed, self.workspace, self.home) if self.guard_enabled else []
        whole = [h for h in hits if h.index < 0]
        writes = written_paths(parsed, self.workspace, self.home)
        judged = (
            self._shell_part(p, [h for h in hits if h.index == k], writes[k])
            for k, p in enumerate(parsed.parts)
        )
        results = [r for r in judged if r is not None]
        for h in whole:
            results.insert(0, Decision(h.level, "guard", f"guard: {h.reason}"))
        if parsed.problems and self.guard_enabled:
            results.append(Decision("ask", "guard", "cannot check the command safely: "
                                    + "; ".join(parsed.problems)))  # fmt: skip
        if not results:
            return self._bare_shell_rules() or Decision("allow", "mode", "empty command")
        return _combine(results, len(parsed.parts))

    def _bare_shell_rules(self) -> Decision | None:
        groups: tuple[tuple[DecisionValue, list[Rule]], ...] = (
            ("deny", self._rules["deny"]),
            ("ask", self._rules["ask"]),
            ("allow", self._allow_rules()),
        )
        for level, rules in groups:
            for r in rules:
                if r.bare and r.names("run_shell"):
                    return Decision(level, "rule", f"{level}: rule {r.text}", r.text)
        return None

    def _shell_rule(self, rule: Rule, forms: set[str]) -> bool:
        if not rule.names("run_shell"):
            return False
        return rule.bare or (rule.bash is not None and any(rule.bash.matches(f) for f in forms))

    def _shell_part(self, part: ShellPart, hits: list[GuardHit], writes: list[Target]
                    ) -> Decision | None:  # fmt: skip
        view = _PartView.of(part)
        where = f" in `{_collapse(part.raw)[:120]}`"
        for r in self._rules["deny"]:
            if self._shell_rule(r, view.any_forms):
                return Decision("deny", "rule", f"denied by rule {r.text}{where}", r.text)
        if found := write_rule_hit(self._rules["deny"], writes, self.workspace):
            why = f"denied by rule {found[0].text}: writes {found[1]}{where}"
            return Decision("deny", "rule", why, found[0].text)
        read_only = part.transparent or is_read_only(part)
        if self.mode == "plan" and not read_only:
            return Decision(
                "deny", "mode", f"plan mode is read-only: not a read-only command{where}"
            )
        for r in self._rules["ask"]:
            if self._shell_rule(r, view.any_forms):
                return Decision("ask", "rule", f"rule {r.text} asks for approval{where}", r.text)
        if found := write_rule_hit(self._rules["ask"], writes, self.workspace):
            why = f"rule {found[0].text} asks for approval: writes {found[1]}{where}"
            return Decision("ask", "rule", why, found[0].text)
        allows = [r for r in self._allow_rules() if self._allow_matches(r, view)]
        for h in hits:
            if not any(h.id in self._named_hits(r) for r in allows):
                return Decision(h.level, "guard", f"guard: {h.reason}{where}")
        if part.transparent:
            return None  # judged through the parts of its script
        if allows:
            return Decision("allow", "rule", f"allowed by rule {allows[0].text}", allows[0].text)
        if read_only or self.mode in ("auto", "bypassPermissions"):
            return Decision("allow", "mode", f"{self.mode} mode allows it")
        return Decision("ask", "mode", f"{self.mode} mode asks before running `{part.text[:120]}`")

    def _allow_matches(self, rule: Rule, view: _PartView) -> bool:
        if not rule.names("run_shell"):
            return False
        if rule.bare or rule.bash is None:
            return rule.bare
        if any(rule.bash.matches(f) for f in view.core_forms):
            return True
        # Wrapped forms only for exact rules, or rules that name the privilege wrapper
        # themselves (`Bash(sudo apt-get:*)`): `Bash(timeout:*)` must not allow everything.
        head = rule.bash.literal.split()[:1]
        named = bool(head) and head[0] in _PRIVILEGE and head[0] in view.wrappers
        return (rule.bash.kind == "exact" or named) and any(
            rule.bash.matches(f) for f in view.full_forms
        )

    def _named_hits(self, rule: Rule) -> frozenset[str]:
        """Guard hits the rule's literal text itself triggers: what it explicitly allows."""
        literal = rule.bash.literal if rule.bash else ""
        if literal not in self._literal_hits:
            found = guard(parse(literal), self.workspace, self.home) if literal else []
            self._literal_hits[literal] = frozenset(h.id for h in found)
        return self._literal_hits[literal]


def _combine(results: list[Decision], n_parts: int) -> Decision:
    for level in ("deny", "ask"):
        for d in results:
            if d.decision == level:
                return d
    if len(results) == 1:
        return results[0]
    by_rule = all(d.by == "rule" for d in results)
    rules = list(dict.fromkeys(d.rule for d in results if d.rule))
    reasons = "; ".join(dict.fromkeys(d.reason for d in results))
    return Decision("allow", "rule" if by_rule else "mode",
                    f"all {n_parts} parts allowed ({reasons})",
                    rules[0] if by_rule and rules else None)  # fmt: skip
