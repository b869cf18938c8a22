"""Skills: discovery of SKILL.md folders, search, and the three skill tools."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_ai_router.skills import MAX_SKILL_BYTES, Skill, SkillIndex
from local_ai_router.tools.registry import ToolContext, ToolOutcome, ToolRegistry
from local_ai_router.tools.skills import skill_tools
from local_ai_router.types import ToolError


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def skill_md(name: str, description: str, body: str = "Steps.", **extra: str) -> str:
    lines = ["---", f"name: {name}", f"description: {description}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join([*lines, "---", "", body, ""])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A workspace with two skill dirs, nested categories and a few broken files."""
    ws = tmp_path / "ws"
    a = ws / ".claude" / "skills"
    write(
        a / "pdf-tools" / "SKILL.md",
        skill_md(
            "pdf-tools",
            "Extract text and tables from PDF files",
            "# PDF\n\nRun the script.",
            when_to_use="the user hands you a .pdf",
        ),
    )
    write(a / "pdf-tools" / "scripts" / "extract.py", "print('hi')\n")
    write(a / "pdf-tools" / "reference.md", "ref\n")
    write(a / "pdf-tools" / "__pycache__" / "x.pyc", b"\0")
    write(
        a / "devops" / "docker-deploy" / "SKILL.md",
        skill_md("docker-deploy", "Ship a service with compose", "Build and push images."),
    )
    write(
        a / "devops" / "k8s" / "SKILL.md",
        skill_md("k8s", "Roll out to a cluster", metadata="{category: infra}"),
    )
    write(a / "notes-only" / "SKILL.md", "# Notes\n\nKeep meeting notes tidy.\n\nMore text.\n")
    write(
        a / "broken-yaml" / "SKILL.md",
        "---\nname: broken-yaml\ndescription: Use this when: things break\n---\nBody\n",
    )
    b = ws / "agents" / "skills"
    write(b / "pdf-tools" / "SKILL.md", skill_md("pdf-tools", "The second, shadowed copy"))
    write(
        b / "writing" / "SKILL.md",
        skill_md("writing", "Edit prose", "Tips about docker images hidden in the body."),
    )
    return ws


def discover(ws: Path) -> SkillIndex:
    return SkillIndex.discover(
        [Path(".claude/skills"), "agents/skills", "missing/dir"], workspace=ws
    )


# --------------------------------------------------------------------------- discovery


def test_discovers_from_several_dirs_with_categories(tree: Path) -> None:
    index = discover(tree)
    names = [s.name for s in index.list()]
    assert names == ["broken-yaml", "docker-deploy", "k8s", "notes-only", "pdf-tools", "writing"]
    assert index.get("docker-deploy").category == "devops"  # parent folder
    assert index.get("k8s").category == "infra"  # metadata.category wins over folder
    assert index.get("pdf-tools").category is None  # directly under the skills dir
    assert [s.name for s in index.list("DEVOPS")] == ["docker-deploy"]
    assert index.categories() == ["devops", "infra"]
    assert index.roots[2] == (tree / "missing" / "dir").absolute()


def test_first_skill_of_a_name_wins_in_dir_order(tree: Path) -> None:
    index = discover(tree)
    pdf = index.get("pdf-tools")
    assert pdf.description == "Extract text and tables from PDF files"
    assert any("duplicate skill name 'pdf-tools'" in p for p in index.problems)
    reversed_index = SkillIndex.discover(["agents/skills", ".claude/skills"], workspace=tree)
    assert reversed_index.get("pdf-tools").description == "The second, shadowed copy"


def test_missing_frontmatter_uses_folder_and_first_paragraph(tree: Path) -> None:
    index = discover(tree)
    notes = index.get("notes-only")
    assert notes.description == "Keep meeting notes tidy."
    assert any("notes-only" in p and "no YAML frontmatter" in p for p in index.problems)


def test_broken_yaml_is_reported_and_still_indexed(tree: Path) -> None:
    index = discover(tree)
    broken = index.get("broken-yaml")
    assert broken is not None
    assert broken.description == "Use this when: things break"
    problem = next(p for p in index.problems if "broken-yaml" in p)
    assert "invalid YAML" in problem and str(broken.path) in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\n- a\n- b\n---\nBody line\n", "not a mapping"),
        ("---\nname: x\ndescription: y\nBody never closes\n", "never closed"),
        ("---\n---\nBody line\n", "frontmatter is empty"),
        ("---\nname: odd\n---\nBody line\n", "missing required 'description'"),
        ("---\nname: [1, 2]\ndescription: d\n---\n", "'name' must be a non-empty string"),
        ("---\nname: Bad Name\ndescription: d\n---\n", "should be lowercase"),
    ],
)
def test_malformed_frontmatter_is_a_problem_not_an_exception(
    tmp_path: Path, text: str, expected: str
) -> None:
    write(tmp_path / "s" / "odd" / "SKILL.md", text)
    index = SkillIndex.discover([tmp_path / "s"])
    assert len(index) == 1
    assert any(expected in p for p in index.problems), index.problems
    assert index.list()[0].description  # a fallback is always there


def test_crlf_and_bom(tmp_path: Path) -> None:
    text = "\ufeff---\r\nname: win\r\ndescription: Made on Windows\r\n---\r\n\r\nStep one.\r\n"
    write(tmp_path / "s" / "win" / "SKILL.md", text.encode("utf-8"))
    index = SkillIndex.discover([tmp_path / "s"])
    skill = index.get("win")
    assert skill.description == "Made on Windows"
    assert skill.load_body() == "Step one."
    assert index.problems == []


def test_huge_file_is_capped(tmp_path: Path) -> None:
    body = "filler line about nothing\n" * (MAX_SKILL_BYTES // 20)
    write(tmp_path / "s" / "big" / "SKILL.md", skill_md("big", "Very large", body))
    index = SkillIndex.discover([tmp_path / "s"])
    big = index.get("big")
    assert big.description == "Very large"
    assert any("only the first" in p for p in index.problems)
    loaded = big.load_body()
    assert len(loaded) < MAX_SKILL_BYTES + 200
    assert loaded.endswith(f"only the first {MAX_SKILL_BYTES} were read]")


def test_resources_listed_and_body_loaded_on_demand(tree: Path) -> None:
    pdf = discover(tree).get("pdf-tools")
    assert pdf.resources == ["reference.md", "scripts/extract.py"]
    assert "body" not in {f.name for f in dataclasses.fields(Skill)}
    assert pdf.body == "# PDF\n\nRun the script."
    write(pdf.path, skill_md("pdf-tools", "changed", "New body."))
    assert pdf.load_body() == "New body."


def test_depth_limit_hidden_dirs_and_nested_skill_folders(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write(root / "a" / "b" / "c" / "deep4" / "SKILL.md", skill_md("deep4", "d"))
    write(root / "a" / "b" / "c" / "d" / "deep5" / "SKILL.md", skill_md("deep5", "d"))
    write(root / ".hidden" / "h" / "SKILL.md", skill_md("h", "d"))
    write(root / "node_modules" / "n" / "SKILL.md", skill_md("n", "d"))
    write(root / "outer" / "SKILL.md", skill_md("outer", "d"))
    write(root / "outer" / "inner" / "SKILL.md", skill_md("inner", "d"))
    index = SkillIndex.discover([root])
    assert [s.name for s in index.list()] == ["deep4", "outer"]
    assert "inner/SKILL.md" in index.get("outer").resources
    assert index.get("deep4").category == "c"


def test_symlink_loop_and_same_dir_twice(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write(root / "one" / "SKILL.md", skill_md("one", "d"))
    (root / "loop").mkdir()
    os.symlink(root, root / "loop" / "back")
    index = SkillIndex.discover([root, root, tmp_path / "s" / "."])
    assert [s.name for s in index.list()] == ["one"]
    assert index.problems == []  # the same file seen twice is not a duplicate


def test_skill_dir_can_be_a_skill_folder_itself(tmp_path: Path) -> None:
    write(tmp_path / "solo" / "SKILL.md", skill_md("solo", "Alone"))
    index = SkillIndex.discover([tmp_path / "solo"])
    assert index.get("solo").category is None


async def test_adiscover(tree: Path) -> None:
    index = await SkillIndex.adiscover([".claude/skills"], workspace=tree)
    assert "pdf-tools" in index and "writing" not in index


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_never_crashes_discovery(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        write(Path(d) / "x" / "SKILL.md", text)
        index = SkillIndex.discover([Path(d)])
        assert len(index) == 1
        assert index.list()[0].name and index.list()[0].description


# --------------------------------------------------------------------------- lookup and search


def test_get_is_forgiving(tree: Path) -> None:
    index = discover(tree)
    assert index.get("PDF-Tools").name == "pdf-tools"
    assert index.get(" pdf tools ").name == "pdf-tools"
    assert index.get("pdf_tools").name == "pdf-tools"
    assert index.get("nope") is None
    assert index.get("") is None


def test_get_by_folder_name(tmp_path: Path) -> None:
    write(tmp_path / "s" / "folder-x" / "SKILL.md", skill_md("other-name", "d"))
    index = SkillIndex.discover([tmp_path / "s"])
    assert index.get("folder-x").name == "other-name"


def test_search_name_beats_body(tree: Path) -> None:
    results = discover(tree).search("docker")
    names = [s.name for s, _ in results]
    assert names[0] == "docker-deploy"
    assert "writing" in names  # matched only through its body
    scores = dict((s.name, score) for s, score in results)
    assert scores["docker-deploy"] > scores["writing"] > 0


def test_search_description_and_when_to_use(tree: Path) -> None:
    index = discover(tree)
    assert index.search("tables")[0][0].name == "pdf-tools"
    assert index.search("compose service")[0][0].name == "docker-deploy"
    assert index.search("hands .pdf")[0][0].name == "pdf-tools"
    assert [s.name for s, _ in index.search("quantum chromodynamics")] == []
    assert index.search("   ") == []
    assert len(index.search("d", limit=2)) <= 2


def test_search_tolerates_typos(tree: Path) -> None:
    assert discover(tree).search("dokcer")[0][0].name == "docker-deploy"


def test_suggest(tree: Path) -> None:
    index = discover(tree)
    assert index.suggest("pdf-tool")[0] == "pdf-tools"
    assert "docker-deploy" in index.suggest("docker")
    assert index.suggest("zzzzqqq") == []
    assert index.suggest("") == []


def test_prompt_listing_respects_budget() -> None:
    skills = [
        Skill(f"skill-{i:02d}", f"Does thing number {i} " * 3, None, None, Path("/x"), Path("/x"))
        for i in range(30)
    ]
    index = SkillIndex(skills)
    full = index.prompt_listing(budget_chars=100_000)
    assert full.count("\n") == 29 and "more" not in full
    for budget in (120, 300, 600):
        text = index.prompt_listing(budget_chars=budget)
        assert len(text) <= budget
        shown = [ln for ln in text.splitlines() if ln.startswith("- ")]
        assert text.splitlines()[-1] == f"(+{30 - len(shown)} more: use search_skills)"
        assert shown and all(len(ln) <= 100 for ln in shown)
    assert SkillIndex().prompt_listing() == ""


# --------------------------------------------------------------------------- tools


async def call(services: dict[str, object], tool_name: str, **args: object) -> ToolOutcome:
    """Validate then execute, as the agent loop does."""
    registry = ToolRegistry(skill_tools())
    ctx = ToolContext(workspace=Path("."), services=services)
    t = registry.get(tool_name)
    assert t is not None
    return await registry.execute(tool_name, t.validate(args), ctx)


def test_tool_metadata() -> None:
    tools = skill_tools()
    assert [t.name for t in tools] == ["list_skills", "search_skills", "read_skill"]
    for t in tools:
        assert t.read_only and t.kind == "read"
        assert len(t.description) <= 50
    compact = ToolRegistry(tools).compact_text()
    assert "list_skills(category?: str)" in compact
    assert "read_skill(name: str)" in compact


async def test_list_skills_tool(tree: Path) -> None:
    services = {"skills": discover(tree)}
    out = await call(services, "list_skills")
    assert out.ok
    assert "- docker-deploy [devops]: Ship a service with compose" in out.output
    assert "- pdf-tools: Extract text" in out.output
    only = await call(services, "list_skills", category="devops")
    assert "docker-deploy" in only.output and "pdf-tools" not in only.output
    none = await call(services, "list_skills", category="cooking")
    assert none.ok and "Categories: devops, infra" in none.output


async def test_search_skills_tool(tree: Path) -> None:
    services = {"skills": discover(tree)}
    out = await call(services, "search_skills", query="docker")
    assert out.output.splitlines()[0].startswith("- docker-deploy")
    miss = await call(services, "search_skills", query="quantum")
    assert miss.ok and "No skills match" in miss.output
    empty = await call(services, "search_skills", query="  ")
    assert not empty.ok and "query is empty" in empty.error


async def test_read_skill_tool(tree: Path) -> None:
    index = discover(tree)
    out = await call({"skills": index}, "read_skill", name="PDF-tools")
    assert out.ok
    folder = index.get("pdf-tools").folder
    assert f"Folder: {folder}" in out.output
    assert "When to use: the user hands you a .pdf" in out.output
    assert "# PDF\n\nRun the script." in out.output
    script = folder / "scripts" / "extract.py"
    assert f"Scripts: scripts/extract.py (run with run_shell: python {script})" in out.output
    assert "Files: reference.md" in out.output
    assert "__pycache__" not in out.output


async def test_read_skill_unknown_name(tree: Path) -> None:
    out = await call({"skills": discover(tree)}, "read_skill", name="pdf-tool")
    assert not out.ok
    assert "unknown skill 'pdf-tool'; did you mean: pdf-tools" in out.error
    assert "search_skills" in out.error
    far = await call({"skills": discover(tree)}, "read_skill", name="zzzzqqq")
    assert "did you mean" not in far.error and "search_skills" in far.error


async def test_read_skill_file_gone(tree: Path) -> None:
    index = discover(tree)
    index.get("writing").path.unlink()
    out = await call({"skills": index}, "read_skill", name="writing")
    assert not out.ok and "cannot read skill 'writing'" in out.error


async def test_tools_without_skills_service() -> None:
    for services in ({}, {"skills": "not an index"}, {"skills": SkillIndex()}):
        listed = await call(services, "list_skills")
        assert listed.ok and "No skills are configured" in listed.output
        found = await call(services, "search_skills", query="x")
        assert "No skills are configured" in found.output
        read = await call(services, "read_skill", name="x")
        assert not read.ok and "No skills are configured" in read.error


def test_bad_tool_arguments_are_clear() -> None:
    read = ToolRegistry(skill_tools()).get("read_skill")
    with pytest.raises(ToolError, match="invalid arguments for read_skill: name"):
        read.validate({})
    with pytest.raises(ToolError, match="Expected: read_skill"):
        read.validate({"name": "x", "extra": 1})
