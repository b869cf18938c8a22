"""Skills: SKILL.md folders (Anthropic's Agent Skills / Claude Code format).

A skill is a folder holding ``SKILL.md``: YAML frontmatter (``name``,
``description`` required; ``when_to_use``, ``allowed-tools``, ``license``,
``metadata``, ``category`` optional) and a markdown body; every other file in
the folder is a resource (``scripts/*.py``, references, templates). Humans use
the same folders, so parsing is forgiving: a file without frontmatter, with
broken YAML or with Windows line endings is still indexed with fallbacks, and
what was wrong is recorded in :attr:`SkillIndex.problems` instead of raised.

Discovery reads each SKILL.md once for its frontmatter and a set of search
terms; bodies are read again on demand (:meth:`Skill.load_body`) so an index of
hundreds of skills stays small.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_SKILL_BYTES",
    "Skill",
    "SkillIndex",
]

MAX_SKILL_BYTES = 256 * 1024
MAX_DEPTH = 4
MAX_RESOURCES = 200
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", ".venv", ".git"})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how",
        "i", "in", "is", "it", "me", "my", "of", "on", "or", "skill", "skills", "the", "to",
        "use", "using", "what", "when", "with",
    }
)  # fmt: skip
# Search weights: where a query word is found says how likely the skill is meant.
_W_NAME, _W_DESC, _W_WHEN, _W_CATEGORY, _W_BODY = 4.0, 2.0, 1.5, 1.0, 0.75


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Skill:
    """One discovered skill. The body is not kept: :meth:`load_body` reads it."""

    name: str
    description: str
    when_to_use: str | None
    category: str | None
    path: Path  # the SKILL.md file
    folder: Path
    resources: list[str] = field(default_factory=list, hash=False)  # relative posix paths
    allowed_tools: tuple[str, ...] = ()
    license: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def load_body(self) -> str:
        """The markdown body (frontmatter removed), read from disk now.

        Raises OSError if the file has gone; files over MAX_SKILL_BYTES are cut
        and say so.
        """
        text, size = _read_capped(self.path)
        _, body, _ = _split_frontmatter(text)
        body = body.strip("\n")
        if size > MAX_SKILL_BYTES:
            body += f"\n[... SKILL.md is {size} bytes; only the first {MAX_SKILL_BYTES} were read]"
        return body

    @property
    def body(self) -> str:
        """Same as :meth:`load_body` (reads the file on each access)."""
        return self.load_body()

    def one_line(self, limit: int = 100) -> str:
        """The description on one line, cut to ``limit`` characters."""
        return _clip(self.description, limit)


# --------------------------------------------------------------------------- parsing


def _read_capped(path: Path) -> tuple[str, int]:
    """Text of ``path`` (at most MAX_SKILL_BYTES of it) and the file's real size."""
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        raw = fh.read(MAX_SKILL_BYTES)
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n"), size


def _split_frontmatter(text: str) -> tuple[str | None, str, bool]:
    """``(frontmatter, body, closed)``; frontmatter is None when the file has none."""
    stripped = text.lstrip("\n")
    lines = stripped.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return None, text, True
    for i in range(1, len(lines)):
        if lines[i].rstrip() in ("---", "..."):
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1 :]), True
    return None, "\n".join(lines[1:]), False


def _lenient_frontmatter(text: str) -> dict[str, Any]:
    """``key: value`` lines, for frontmatter YAML rejects (``description: a: b``)."""
    out: dict[str, Any] = {}
    key: str | None = None
    for line in text.split("\n"):
        m = re.match(r"^([A-Za-z_][\w-]*)\s*:\s*(.*)$", line)
        if m:
            key, value = m.group(1), m.group(2).strip()
            if value in (">", "|", ">-", "|-", ">+", "|+"):
                value = ""
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[key] = value
        elif key is not None and line[:1] in (" ", "\t") and isinstance(out.get(key), str):
            out[key] = f"{out[key]} {line.strip()}".strip()
    return out


def _first_paragraph_line(body: str) -> str:
    for line in body.split("\n"):
        s = line.strip()
        if s and not s.startswith(("#", "---", "```", "<!--")):
            return s
    return ""


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"


def _text_field(meta: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    return None


def _tools_field(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(t for t in re.split(r"[,\s]+", value) if t)
    if isinstance(value, list):
        return tuple(str(t) for t in value if t is not None)
    return ()


def _parse_meta(fm: str | None, closed: bool, where: str) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    if not closed:
        return {}, [f"{where}: frontmatter starts with '---' but is never closed"]
    if fm is None:
        return {}, [f"{where}: no YAML frontmatter; using folder name and first paragraph"]
    try:
        loaded = yaml.safe_load(fm)
    except yaml.YAMLError as exc:
        first = str(exc).strip().split("\n", 1)[0]
        mark = getattr(exc, "problem_mark", None)
        at = f" (frontmatter line {mark.line + 1})" if mark is not None else ""
        problems.append(f"{where}: invalid YAML frontmatter{at}: {first}")
        return _lenient_frontmatter(fm), problems
    if loaded is None:
        return {}, [f"{where}: frontmatter is empty"]
    if not isinstance(loaded, dict):
        kind = type(loaded).__name__
        return {}, [f"{where}: frontmatter is a {kind}, not a mapping of keys"]
    return {str(k): v for k, v in loaded.items()}, problems


def _category(meta: Mapping[str, Any], folder: Path, root: Path) -> str | None:
    metadata = meta.get("metadata")
    found = _text_field(meta, "category")
    if found is None and isinstance(metadata, dict):
        found = _text_field(metadata, "category")
    if found is not None:
        return found
    # Nested layout <dir>/<category>/<skill>/SKILL.md: the parent folder names it.
    return folder.parent.name if folder != root and folder.parent != root else None


def _parse_skill(path: Path, root: Path) -> tuple[Skill | None, list[str], frozenset[str]]:
    """Build a Skill from one SKILL.md; never raises. Also returns the body's terms."""
    where = str(path)
    try:
        text, size = _read_capped(path)
    except OSError as exc:
        return None, [f"{where}: cannot read: {exc.strerror or exc}"], frozenset()
    problems: list[str] = []
    if size > MAX_SKILL_BYTES:
        problems.append(f"{where}: {size} bytes; only the first {MAX_SKILL_BYTES} are read")
    fm, body, closed = _split_frontmatter(text)
    meta, meta_problems = _parse_meta(fm, closed, where)
    problems += meta_problems
    folder = path.parent

    name = _text_field(meta, "name")
    if name is None:
        if "name" in meta:
            problems.append(f"{where}: 'name' must be a non-empty string; using folder name")
        name = folder.name
    elif not _NAME_RE.match(name) and fm is not None:
        problems.append(f"{where}: name {name!r} should be lowercase letters, digits, hyphens")
    description = _text_field(meta, "description")
    if description is None:
        description = _first_paragraph_line(body) or "(no description)"
        if fm is not None:
            problems.append(f"{where}: missing required 'description'")
    metadata = meta.get("metadata")
    skill = Skill(
        name=name,
        description=description,
        when_to_use=_text_field(meta, "when_to_use", "when-to-use", "when to use"),
        category=_category(meta, folder, root),
        path=path,
        folder=folder,
        resources=_list_resources(folder, path.name),
        allowed_tools=_tools_field(meta.get("allowed-tools", meta.get("allowed_tools"))),
        license=_text_field(meta, "license"),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
    )
    return skill, problems, frozenset(_TOKEN_RE.findall(body.lower()))


# --------------------------------------------------------------------------- walking


def _find_skill_files(root: Path, max_depth: int) -> Iterator[Path]:
    """SKILL.md files under ``root`` in sorted order; a skill's folder is not searched further."""
    stack: list[tuple[Path, int]] = [(root, 0)]
    seen: set[Path] = set()
    while stack:
        folder, depth = stack.pop()
        try:
            real = folder.resolve()
            if real in seen:  # symlink loops
                continue
            seen.add(real)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        # Exact "SKILL.md" sorts before "skill.md", so it wins when both exist.
        marker = next((e for e in entries if e.name.lower() == "skill.md" and _is_file(e)), None)
        if marker is not None:
            yield Path(marker.path)
            continue
        if depth >= max_depth:
            continue
        subdirs = [
            e
            for e in entries
            if not e.name.startswith(".") and e.name not in _SKIP_DIRS and _is_dir(e)
        ]
        stack.extend((Path(e.path), depth + 1) for e in reversed(subdirs))


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _list_resources(folder: Path, marker: str, max_depth: int = 3) -> list[str]:
    """Files beside SKILL.md, relative posix paths, hidden and cache folders skipped."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = Path(dirpath).relative_to(folder)
        depth = len(rel_dir.parts)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and d not in _SKIP_DIRS and depth < max_depth
        )
        for fname in sorted(filenames):
            if fname.startswith(".") or (depth == 0 and fname == marker):
                continue
            out.append((rel_dir / fname).as_posix())
            if len(out) >= MAX_RESOURCES:
                return out
    return out


# --------------------------------------------------------------------------- search helpers


def _norm(name: str) -> str:
    """Lower case with spaces/underscores as hyphens: "PDF tools" finds "pdf-tools"."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _tokens(text: str | None) -> set[str]:
    return set(_TOKEN_RE.findall(text.lower())) if text else set()


def _field_hits(query: list[str], terms: set[str] | frozenset[str], *, prefix: bool) -> float:
    """Fraction of query words found in ``terms``; a shared prefix counts for less."""
    if not terms:
        return 0.0
    hits = 0.0
    for q in query:
        if q in terms:
            hits += 1.0
        elif (
            prefix
            and len(q) >= 3
            and any(t.startswith(q) or (len(t) >= 4 and q.startswith(t)) for t in terms)
        ):
            hits += 0.6
    return hits / len(query)


def _query_words(query: str) -> list[str]:
    words = _TOKEN_RE.findall(query.lower())
    kept = [w for w in words if w not in _STOPWORDS]
    return list(dict.fromkeys(kept or words))


# --------------------------------------------------------------------------- index


class SkillIndex:
    """Skills by name, first of a name wins; search, suggestions, a prompt listing."""

    def __init__(
        self,
        skills: Iterable[Skill] = (),
        *,
        problems: Iterable[str] = (),
        roots: Iterable[Path] = (),
        body_terms: Mapping[Path, frozenset[str]] | None = None,
    ) -> None:
        self.problems: list[str] = list(problems)
        self.roots: list[Path] = list(roots)
        self._skills: dict[str, Skill] = {}
        for s in skills:
            key = s.name.lower()
            if key in self._skills:
                kept = self._skills[key].path
                self.problems.append(f"{s.path}: duplicate skill name {s.name!r}; using {kept}")
                continue
            self._skills[key] = s
        self._by_norm = {_norm(s.name): s for s in self._skills.values()}
        self._by_folder: dict[str, Skill] = {}
        for s in self._skills.values():
            self._by_folder.setdefault(s.folder.name.lower(), s)
        self._body_terms = dict(body_terms or {})

    @classmethod
    def discover(
        cls,
        dirs: Iterable[Path | str],
        *,
        workspace: Path | None = None,
        max_depth: int = MAX_DEPTH,
    ) -> SkillIndex:
        """Index every SKILL.md under ``dirs`` (in order; earlier dirs win a name clash).

        Relative dirs are resolved against ``workspace`` (else the current
        directory); missing dirs are skipped. Never raises on bad files.
        """
        base = (workspace or Path.cwd()).expanduser()
        roots: list[Path] = []
        skills: list[Skill] = []
        problems: list[str] = []
        terms: dict[Path, frozenset[str]] = {}
        seen_files: set[Path] = set()
        for d in dirs:
            root = Path(d).expanduser()
            root = (root if root.is_absolute() else base / root).absolute()
            roots.append(root)
            if not root.is_dir():
                continue
            for path in _find_skill_files(root, max_depth):
                real = path.resolve()
                if real in seen_files:  # the same folder reached through two dirs
                    continue
                seen_files.add(real)
                skill, found, body_terms = _parse_skill(path, root)
                problems += found
                if skill is not None:
                    skills.append(skill)
                    terms[skill.path] = body_terms
        return cls(skills, problems=problems, roots=roots, body_terms=terms)

    @classmethod
    async def adiscover(
        cls, dirs: Iterable[Path | str], *, workspace: Path | None = None
    ) -> SkillIndex:
        """:meth:`discover` in a worker thread, so the event loop keeps running."""
        dirs = list(dirs)
        return await asyncio.to_thread(lambda: cls.discover(dirs, workspace=workspace))

    def __len__(self) -> int:
        return len(self._skills)

    def __iter__(self) -> Iterator[Skill]:
        return iter(self.list())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def list(self, category: str | None = None) -> list[Skill]:
        """Skills sorted by name; ``category`` (case-insensitive) filters."""
        out = sorted(self._skills.values(), key=lambda s: s.name.lower())
        if category is None or not category.strip():
            return out
        want = category.strip().lower()
        return [s for s in out if (s.category or "").lower() == want]

    def categories(self) -> list[str]:
        return sorted({s.category for s in self._skills.values() if s.category}, key=str.lower)

    def get(self, name: str) -> Skill | None:
        """By name (case-insensitive, "PDF tools" finds "pdf-tools"), else by folder name."""
        key = name.strip().lower()
        if not key:
            return None
        found = self._skills.get(key) or self._by_norm.get(_norm(key))
        return found or self._by_folder.get(key)

    def search(self, query: str, limit: int = 5) -> list[tuple[Skill, float]]:
        """Skills best matching ``query``, best first, with a score (higher is better)."""
        words = _query_words(query)
        if not words or limit < 1:
            return []
        phrase = _norm(query)
        scored = [(s, self._score(s, words, phrase)) for s in self._skills.values()]
        ranked = sorted((x for x in scored if x[1] > 0), key=lambda x: (-x[1], x[0].name))
        return [(s, round(score, 3)) for s, score in ranked[:limit]]

    def _score(self, skill: Skill, words: list[str], phrase: str) -> float:
        name = _norm(skill.name)
        name_terms = _tokens(skill.name)
        score = _W_NAME * _field_hits(words, name_terms, prefix=True)
        if phrase == name:
            score += _W_NAME
        elif len(phrase) >= 3 and phrase in name:
            score += _W_NAME * 0.5
        else:
            # Typos: "dokcer" still finds "docker-compose".
            ratio = difflib.SequenceMatcher(None, phrase, name).ratio()
            if ratio >= 0.6:
                score += _W_NAME * 0.75 * ratio
            fuzzy = sum(
                1
                for w in words
                if w not in name_terms and difflib.get_close_matches(w, name_terms, 1, 0.8)
            )
            score += _W_NAME * 0.5 * fuzzy / len(words)
        low_phrase = phrase.replace("-", " ")
        for text, weight in ((skill.description, _W_DESC), (skill.when_to_use, _W_WHEN)):
            score += weight * _field_hits(words, _tokens(text), prefix=True)
            if text and len(low_phrase) >= 4 and low_phrase in " ".join(text.lower().split()):
                score += weight * 0.5
        score += _W_CATEGORY * _field_hits(words, _tokens(skill.category), prefix=True)
        body = self._body_terms.get(skill.path, frozenset())
        return score + _W_BODY * _field_hits(words, body, prefix=False)

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Names close to ``name``, for "did you mean"."""
        key = _norm(name)
        if not key:
            return []
        names = {_norm(s.name): s.name for s in self._skills.values()}
        names.update({s.folder.name.lower(): s.name for s in self._skills.values()})
        out = [names[n] for n in difflib.get_close_matches(key, list(names), limit, 0.5)]
        # A word of the name ("pdf" for "pdf-tools") is a good guess difflib can miss.
        out += sorted(names[n] for n in names if len(key) >= 3 and (key in n or n in key))
        return list(dict.fromkeys(out))[:limit]

    def prompt_listing(self, budget_chars: int = 600, line_chars: int = 100) -> str:
        """``- name: description`` per skill, within ``budget_chars`` (a system-prompt block)."""
        skills = self.list()
        lines: list[str] = []
        used = 0
        for i, s in enumerate(skills):
            line = f"- {s.name}: {s.one_line(max(line_chars - len(s.name) - 4, 20))}"
            rest = len(skills) - i - 1
            footer = len(f"(+{rest} more: use search_skills)") + 1 if rest else 0
            if used + len(line) + 1 + footer > budget_chars:
                break
            lines.append(line)
            used += len(line) + 1
        if len(lines) < len(skills):
            lines.append(f"(+{len(skills) - len(lines)} more: use search_skills)")
        return "\n".join(lines)
