"""Permission rules (Claude Code syntax), modes, decisions, and the gate with hooks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from local_ai_router.agent.gate import PermissionGate, load_claude_settings
from local_ai_router.agent.hooks import HookContext, HookRunner
from local_ai_router.agent.permissions import MODES, PermissionPolicy, parse_rule, tool_kind
from local_ai_router.agent.policy_setup import PROTECTED_FILE_RULES
from local_ai_router.types import ConfigError

HOME = "/home/tester"


def policy(ws: Path, mode: str = "auto", **rules: list[str]) -> PermissionPolicy:
    return PermissionPolicy(mode=mode, workspace=ws, home=HOME, **rules)


def decide(p: PermissionPolicy, tool: str, **args: Any) -> str:
    return p.evaluate(tool, args).decision


# --------------------------------------------------------------------------- rule syntax


@pytest.mark.parametrize(
    "text",
    ["", "   ", "Bash(", "Bash)", "Bash(npm", "Foo Bar", "Bash()", "Bash(  )", "(x)", "1abc",
     "Bash(git:*:x)", "mcp__", "mcp__(x)", "mcp__srv(x)", "mcp__*__x", "git_*(x)", 42, None],
)  # fmt: skip
def test_garbled_rules_raise_a_clear_error(tmp_path: Path, text: object):
    with pytest.raises(ValueError, match="permission rule"):
        PermissionPolicy(workspace=tmp_path, allow=[text])  # type: ignore[list-item]


def test_error_names_the_rule():
    with pytest.raises(ValueError, match=r"'Bash\(git:\*:x\)'.*only end"):
        parse_rule("Bash(git:*:x)")


@pytest.mark.parametrize(
    ("rule", "command", "matches"),
    [
        ("Bash(npm run test)", "npm run test", True),
        ("Bash(npm run test)", "npm run test -- -x", False),
        ("Bash(npm run test)", "npm  run   test", True),  # whitespace collapses
        ("Bash(git diff:*)", "git diff", True),
        ("Bash(git diff:*)", "git diff HEAD~1 --stat", True),
        ("Bash(git diff:*)", "git diffx", False),
        ("Bash(npm run *)", "npm run build", True),
        ("Bash(npm run *)", "npm run", True),  # a lone trailing ` *` is optional
        ("Bash(npm run *)", "npm runx", False),
        ("Bash(ls*)", "lsof", True),  # no space: any continuation
        ("Bash(git * main)", "git push origin main", True),
        ("Bash(git * main)", "git push origin dev", False),
        ("Bash(echo \\*)", "echo *", True),  # escaped star is literal
        ("Bash(echo \\*)", "echo hi", False),
        ("Bash", "anything at all", True),
        ("Bash(*)", "anything at all", True),
        ("run_shell(make:*)", "make all", True),
    ],
)
def test_bash_specifiers(tmp_path: Path, rule: str, command: str, matches: bool):
    p = policy(tmp_path, "ask", allow=[rule])
    d = p.evaluate("run_shell", {"command": command})
    assert (d.by == "rule") is matches, d


def test_bash_rules_match_quoted_source_and_parsed_words(tmp_path: Path):
    p = policy(tmp_path, "ask", allow=['Bash(git commit -m "fix it")'])
    assert decide(p, "run_shell", command='git commit -m "fix it"') == "allow"
    p = policy(tmp_path, "ask", allow=["Bash(git commit -m fix it)"])
    assert decide(p, "run_shell", command="git commit -m 'fix it'") == "allow"


@pytest.mark.parametrize(
    ("spec", "path", "matches"),
    [
        ("Read(./secrets/**)", "secrets/key.pem", True),
        ("Read(./secrets/**)", "secrets/a/b/c", True),
        ("Read(./secrets/**)", "src/secrets/key", False),
        ("Read(/secrets/**)", "secrets/key", True),  # /path: relative to the workspace
        ("Read(secrets/**)", "secrets/key", True),
        ("Read(.env)", ".env", True),
        ("Read(.env)", "deep/down/.env", True),  # no slash: any depth (gitignore)
        ("Read(./.env)", "deep/.env", False),
        ("Read(*.pem)", "a/b/server.pem", True),
        ("Read(src/*.py)", "src/a.py", True),
        ("Read(src/*.py)", "src/sub/a.py", False),
        ("Read(src/**/*.py)", "src/sub/deep/a.py", True),
        ("Read(src/**/*.py)", "src/a.py", True),
        ("Read(build)", "build/out/x.o", True),  # a directory covers what is inside it
        ("Read(file[12].txt)", "file1.txt", True),
        ("Read(file[!12].txt)", "file1.txt", False),
        ("Read(//{ws}/secrets/**)", "secrets/x", True),  # //: absolute
        ("Read(../{wsname}/secrets/**)", "secrets/x", True),
    ],
)
def test_path_specifiers(tmp_path: Path, spec: str, path: str, matches: bool):
    ws = tmp_path / "ws"
    ws.mkdir()
    rule = spec.replace("{ws}", str(ws).lstrip("/")).replace("{wsname}", ws.name)
    p = policy(ws, deny=[rule])
    assert (decide(p, "read_file", path=path) == "deny") is matches


def test_home_and_absolute_path_rules(tmp_path: Path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    ws = tmp_path / "ws"
    ws.mkdir()
    p = PermissionPolicy(workspace=ws, home=str(home), deny=["Read(~/.ssh/**)", "Read(//etc/**)"])
    assert decide(p, "read_file", path=str(home / ".ssh" / "id_rsa")) == "deny"
    assert decide(p, "read_file", path="/etc/hosts") == "deny"
    assert decide(p, "read_file", path="notes.txt") == "allow"


def test_read_rules_cover_every_reading_tool(tmp_path: Path):
    p = policy(tmp_path, deny=["Read(./secrets/**)"])
    assert decide(p, "read_file", path="secrets/k") == "deny"
    assert decide(p, "list_directory", path="secrets/sub") == "deny"
    assert decide(p, "search_files", pattern="x", path="secrets/sub") == "deny"
    assert decide(p, "write_file", path="secrets/k", content="") == "allow"  # Edit rules do that


def test_edit_rules_cover_write_and_edit(tmp_path: Path):
    p = policy(tmp_path, "ask", allow=["Edit(src/**)"])
    assert p.evaluate("write_file", {"path": "src/a.py"}).by == "rule"
    assert p.evaluate("edit_file", {"path": "src/a/b.py"}).by == "rule"
    assert decide(p, "write_file", path="README.md") == "ask"
    p = policy(tmp_path, "ask", allow=["Write(docs/**)", "MultiEdit(lib/**)"])
    assert decide(p, "write_file", path="docs/x.md") == "allow"
    assert decide(p, "edit_file", path="docs/x.md") == "ask"
    assert decide(p, "edit_file", path="lib/x.py") == "allow"


def test_dotdot_and_symlinks_cannot_escape_a_path_rule(tmp_path: Path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text("k")
    (tmp_path / "src").mkdir()
    os.symlink(tmp_path / "secrets", tmp_path / "src" / "link")
    p = policy(tmp_path, deny=["Read(./secrets/**)"])
    assert decide(p, "read_file", path="src/../secrets/key") == "deny"
    assert decide(p, "read_file", path=str(tmp_path / "secrets" / "key")) == "deny"
    assert decide(p, "read_file", path="src/link/key") == "deny"
    # an allow rule must cover the real path too
    p = policy(tmp_path, "ask", allow=["Edit(src/**)"])
    assert decide(p, "write_file", path="src/link/key") == "ask"


def test_glob_and_grep_and_ls_aliases(tmp_path: Path):
    p = policy(tmp_path, "ask", deny=["Grep(./private/**)", "LS(./hidden)"])
    assert decide(p, "search_files", pattern="x", path="private/a") == "deny"
    assert decide(p, "list_directory", path="hidden") == "deny"
    assert decide(p, "read_file", path="private/a") == "allow"


@pytest.mark.parametrize(
    ("rule", "tool", "matches"),
    [
        ("mcp__github", "mcp__github__create_issue", True),
        ("mcp__github", "mcp__githubx__a", False),
        ("mcp__github__*", "mcp__github__list", True),
        ("mcp__github__create_issue", "mcp__github__create_issue", True),
        ("mcp__github__create_issue", "mcp__github__delete_repo", False),
        ("git_*", "git_push", True),
        ("git_push", "git_push", True),
        ("git_push", "git_pull", False),
        ("Task", "spawn_agents", True),
        ("Agent", "spawn_agents", True),
    ],
)
def test_tool_name_rules(tmp_path: Path, rule: str, tool: str, matches: bool):
    p = policy(tmp_path, deny=[rule])
    assert (decide(p, tool) == "deny") is matches
    assert p.is_tool_offered(tool) is not matches


def test_agent_specifier(tmp_path: Path):
    p = policy(tmp_path, "ask", allow=["Task(Explore)"], deny=["Agent(deployer)"])
    one = {"tasks": [{"prompt": "look", "agent": "Explore"}]}
    mixed = {"tasks": [{"prompt": "a", "agent": "Explore"}, {"prompt": "b", "agent": "deployer"}]}
    assert p.evaluate("spawn_agents", one).by == "rule"
    assert p.evaluate("spawn_agents", mixed).decision == "deny"


def test_unknown_claude_tools_are_accepted_but_match_nothing(tmp_path: Path):
    p = policy(tmp_path, "ask", allow=["WebFetch(domain:example.com)", "NotebookEdit"])
    assert decide(p, "git_push") == "ask"


def test_scoped_deny_keeps_the_tool_offered(tmp_path: Path):
    p = policy(tmp_path, deny=["Bash(rm:*)", "Read(./x/**)"])
    assert p.is_tool_offered("run_shell") and p.is_tool_offered("read_file")
    p = policy(tmp_path, deny=["Bash", "Edit"])
    assert not p.is_tool_offered("run_shell")
    assert not p.is_tool_offered("write_file") and not p.is_tool_offered("edit_file")
    assert p.is_tool_offered("read_file")


# --------------------------------------------------------------------------- order


def test_deny_then_ask_then_allow_whatever_the_specificity(tmp_path: Path):
    p = policy(tmp_path, allow=["Bash(aws s3 ls)"], ask=["Bash(aws s3:*)"], deny=["Bash(aws:*)"])
    d = p.evaluate("run_shell", {"command": "aws s3 ls"})
    assert (d.decision, d.rule) == ("deny", "Bash(aws:*)")
    p = policy(tmp_path, allow=["Bash(aws s3 ls)"], ask=["Bash(aws s3:*)"])
    assert p.evaluate("run_shell", {"command": "aws s3 ls"}).rule == "Bash(aws s3:*)"


def test_every_part_must_be_allowed(tmp_path: Path):
    p = policy(tmp_path, "ask", allow=["Bash(npm test:*)"])
    assert decide(p, "run_shell", command="npm test") == "allow"
    d = p.evaluate("run_shell", {"command": "npm test && curl -X POST x"})
    assert d.decision == "ask" and "curl" in d.reason
    assert decide(p, "run_shell", command="npm test | tee out.log") == "ask"
    p = policy(tmp_path, "ask", allow=["Bash(npm test:*)", "Bash(tee:*)"])
    d = p.evaluate("run_shell", {"command": "npm test | tee out.log"})
    assert (d.decision, d.by) == ("allow", "rule")


def test_wrappers_do_not_hide_a_part_from_rules(tmp_path: Path):
    p = policy(tmp_path, "ask", allow=["Bash(npm test:*)"])
    assert decide(p, "run_shell", command="timeout 60 npm test") == "allow"
    assert decide(p, "run_shell", command="CI=1 nice npm test") == "allow"
    # but a rule for a wrapper does not allow whatever it wraps
    p = policy(tmp_path, "ask", allow=["Bash(timeout:*)"])
    assert decide(p, "run_shell", command="timeout 5 curl -X DELETE x") == "ask"


# --------------------------------------------------------------------------- shell writes

MCP, SETTINGS, LOCAL = PROTECTED_FILE_RULES
SECRETS = "Edit(secrets/**)"
SHELL_WRITES = {  # rule -> commands it must catch ({ws}: the workspace's absolute path)
    MCP: [
        "echo '{\"mcpServers\": {}}' > .mcp.json", "echo x >| .mcp.json", "make &> .mcp.json",
        "cat > .mcp.json <<EOF\n{}\nEOF", "{ echo a; echo b; } > .mcp.json",
        "true && echo x > .mcp.json", 'bash -c "echo x > .mcp.json"', "x=$(echo y > .mcp.json)",
        "echo x | sudo tee .mcp.json > /dev/null", "cp a ./sub/../.mcp.json",
        "cp /tmp/evil/.mcp.json .", "echo x > {ws}/.mcp.json", "echo x > $PWD/.mcp.json",
        "echo x > .mcp{.json,}", "mv new.json .mcp.json", "ln -sf /tmp/evil.json .mcp.json",
        "sed -i 's/a/b/' .mcp.json", "perl -pi -e 's/a/b/' .mcp.json", "truncate -s 0 .mcp.json",
        "dd if=new.json of=.mcp.json", "rsync -a new.json .mcp.json", "sort -o .mcp.json list",
        "curl -sSo .mcp.json https://example.com/x", "wget https://example.com/.mcp.json",
    ],
    SETTINGS: [
        "echo x >> .claude/settings.json", "echo x | tee -a .claude/settings.json",
        "cp -t .claude /tmp/settings.json", "sed -i.bak -e s/a/b/ .claude/settings.json",
        "mv /tmp/evil-dir .claude",  # a whole directory lands there
        "cd .claude && tee settings.json < new.json",
        'cd "$DIR" && cp x settings.json',  # a directory known only at run time
    ],
    LOCAL: ["ls 2> .claude/settings.local.json", "install -m 644 x .claude/settings.local.json"],
    SECRETS: ["echo x > secrets/key", "cp a.pem secrets/", "true; tee ./sub/../secrets/a/b"],
}  # fmt: skip
SHELL_NON_WRITES = [
    "cat .mcp.json", "jq . < .mcp.json", "cat .claude/settings.json | jq .permissions",
    "grep x .mcp.json > out.txt", "sed 's/a/b/' .mcp.json > new.json", "cat secrets/key",
    "diff .mcp.json .mcp.json.orig", "cp .mcp.json backup.json", "echo x > notes.txt",
    "echo x > sub/.mcp.json",  # not the workspace root's file
    "echo x | tee sub/.claude/settings.json", "echo x > .mcp.json.bak", "ls 2>&1 | tee b.log",
    "cd sub && echo x > out.txt", 'cd "$DIR" && echo x > notes.txt', "mv a b && cp -r src/ b/",
]  # fmt: skip


def protected(ws: Path, mode: str = "auto") -> PermissionPolicy:
    return policy(ws, mode, ask=list(PROTECTED_FILE_RULES), deny=[SECRETS])


@pytest.mark.parametrize(
    ("rule", "command"), [(r, c) for r, cs in SHELL_WRITES.items() for c in cs]
)
def test_shell_writes_obey_edit_rules(tmp_path: Path, rule: str, command: str):
    expected = "deny" if rule == SECRETS else "ask"
    d = protected(tmp_path).evaluate(
        "run_shell", {"command": command.replace("{ws}", str(tmp_path))}
    )
    assert (d.decision, d.by, d.rule) == (expected, "rule", rule), d
    assert rule in d.reason and "writes" in d.reason


@pytest.mark.parametrize("command", SHELL_NON_WRITES)
def test_shell_reads_and_other_writes_stay_allowed(tmp_path: Path, command: str):
    assert decide(protected(tmp_path), "run_shell", command=command) == "allow"


def test_shell_write_rules_and_modes(tmp_path: Path):
    bypass = protected(tmp_path, "bypassPermissions")
    d = bypass.evaluate("run_shell", {"command": "echo x > .mcp.json"})
    assert d.decision == "allow" and "bypassPermissions" in d.reason
    assert decide(bypass, "run_shell", command="echo x > secrets/k") == "deny"
    assert decide(protected(tmp_path, "plan"), "run_shell", command="cat .mcp.json") == "allow"
    # Read rules do not cover writes; Write(...) rules and ~ paths do
    p = policy(tmp_path, deny=["Read(.env)"], ask=["Write(~/.claude/settings.json)"])
    assert decide(p, "run_shell", command="echo x > .env") == "allow"
    assert decide(p, "run_shell", command="echo x > ~/.claude/settings.json") == "ask"
    assert decide(p, "run_shell", command="cd && tee .claude/settings.json") == "ask"


def test_shell_writes_through_an_existing_symlink(tmp_path: Path):
    (tmp_path / ".mcp.json").write_text("{}")
    os.symlink(tmp_path / ".mcp.json", tmp_path / "link.json")
    d = protected(tmp_path).evaluate("run_shell", {"command": "echo x > link.json"})
    assert (d.decision, d.rule) == ("ask", MCP)


# --------------------------------------------------------------------------- modes

MODE_TABLE = {
    # (tool, args): decisions for auto, ask, acceptEdits, plan, bypassPermissions
    ("read_file", "a.txt"): ("allow", "allow", "allow", "allow", "allow"),
    ("search_files", "."): ("allow", "allow", "allow", "allow", "allow"),
    ("task_complete", None): ("allow", "allow", "allow", "allow", "allow"),
    ("write_file", "a.txt"): ("allow", "ask", "allow", "deny", "allow"),
    ("edit_file", "a.txt"): ("allow", "ask", "allow", "deny", "allow"),
    ("git_commit", None): ("allow", "ask", "ask", "deny", "allow"),
    ("mcp__srv__do", None): ("allow", "ask", "ask", "deny", "allow"),
    ("spawn_agents", None): ("allow", "allow", "allow", "allow", "allow"),
    ("run_shell", "ls -la | grep x"): ("allow", "allow", "allow", "allow", "allow"),
    ("run_shell", "git status && git log -3"): ("allow", "allow", "allow", "allow", "allow"),
    ("run_shell", "npm install"): ("allow", "ask", "ask", "deny", "allow"),
    ("run_shell", "ls > files.txt"): ("allow", "ask", "ask", "deny", "allow"),
    ("run_shell", "find . -name '*.o' -delete"): ("allow", "ask", "ask", "deny", "allow"),
    ("run_shell", "find . -delete"): ("deny", "deny", "deny", "deny", "deny"),  # the whole ws
    ("run_shell", "git push --force"): ("ask", "ask", "ask", "deny", "allow"),
    ("run_shell", "rm -rf /"): ("deny", "deny", "deny", "deny", "deny"),
}


@pytest.mark.parametrize(("case", "expected"), MODE_TABLE.items(), ids=str)
def test_modes(tmp_path: Path, case: tuple[str, str | None], expected: tuple[str, ...]):
    tool, arg = case
    args: dict[str, Any] = {}
    if tool == "run_shell":
        args = {"command": arg}
    elif arg is not None:
        args = {"path": arg}
    got = tuple(policy(tmp_path, mode).evaluate(tool, args).decision for mode in MODES)
    assert got == expected


def test_mode_decisions_say_who_decided(tmp_path: Path):
    d = policy(tmp_path, "ask").evaluate("write_file", {"path": "a"})
    assert (d.decision, d.by) == ("ask", "mode")
    d = policy(tmp_path, "plan").evaluate("run_shell", {"command": "make"})
    assert (d.decision, d.by) == ("deny", "mode") and "plan" in d.reason


def test_plan_mode_caps_allow_rules_but_not_reads(tmp_path: Path):
    p = policy(tmp_path, "plan", allow=["Edit", "Bash(make:*)", "git_push"])
    assert decide(p, "write_file", path="a") == "deny"
    assert decide(p, "run_shell", command="make") == "deny"
    assert decide(p, "git_push") == "deny"
    assert decide(p, "read_file", path="a") == "allow"


def test_bypass_keeps_deny_rules_and_lifts_ask_rules(tmp_path: Path):
    p = policy(tmp_path, "bypassPermissions", deny=["Read(.env)"], ask=["Bash(make:*)"])
    assert decide(p, "read_file", path=".env") == "deny"
    assert decide(p, "run_shell", command="make") == "allow"


def test_mode_names(tmp_path: Path):
    assert policy(tmp_path, "default").mode == "ask"  # Claude Code's name for asking
    with pytest.raises(ValueError, match="unknown permission mode 'yolo'"):
        policy(tmp_path, "yolo")
    p = policy(tmp_path, allow=["Bash(make:*)"]).with_mode("plan")
    assert p.mode == "plan" and decide(p, "write_file", path="a") == "deny"


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("spawn_agents", {"tasks": 5}),
        ("spawn_agents", {"tasks": [1, "x", None]}),
        ("read_file", {"path": 5}),
        ("read_file", None),
        ("write_file", {"path": ["a"]}),
        ("run_shell", {"command": 12}),
        ("run_shell", {}),
        ("mcp__x__y", "not a dict"),
    ],
)
def test_malformed_arguments_are_judged_not_raised(tmp_path: Path, tool: str, args: Any):
    p = policy(tmp_path, "ask", allow=["Task(Explore)", "Edit(src/**)"], deny=["Read(.env)"])
    assert p.evaluate(tool, args).decision in ("allow", "ask", "deny")


def test_tool_kinds():
    assert [tool_kind(t) for t in ("git_log", "edit_file", "run_shell", "git_push")] == [
        "read",
        "write",
        "shell",
        "other",
    ]


# --------------------------------------------------------------------------- remembering


def test_remember_adds_narrow_session_rules(tmp_path: Path):
    p = policy(tmp_path, "ask")
    args = {"command": "npm ci && chmod +x *.sh"}
    assert decide(p, "run_shell", **args) == "ask"
    assert p.remember("run_shell", args) == ["Bash(npm ci)", "Bash(chmod +x \\*.sh)"]
    assert decide(p, "run_shell", **args) == "allow"
    assert decide(p, "run_shell", command="npm ci --force") == "ask"  # exact, not prefix
    assert decide(p, "run_shell", command="chmod +x run.sh") == "ask"  # the star stayed literal


def test_remember_file_and_other_tools(tmp_path: Path):
    p = policy(tmp_path, "ask")
    assert p.remember("write_file", {"path": "src/a[1].py"}) == ["Edit(/src/a\\[1].py)"]
    assert decide(p, "write_file", path="src/a[1].py") == "allow"
    assert decide(p, "write_file", path="src/a1.py") == "ask"
    assert p.rules_for("read_file", {"path": "/etc/hosts"}) == ["Read(//etc/hosts)"]
    assert p.remember("mcp__gh__x", {}) == ["mcp__gh__x"]
    assert decide(p, "mcp__gh__x") == "allow"
    with pytest.raises(ValueError, match="permission rule"):
        p.add_session_allow("Bash(")


def test_read_denied_helper_for_search_tools(tmp_path: Path):
    p = policy(tmp_path, deny=["Read(./secrets/**)", "Read(.env)"])
    assert p.read_denied("secrets/a/b") and p.read_denied("sub/.env")
    assert not p.read_denied("src/a.py")


# --------------------------------------------------------------------------- gate + hooks


def ctx(ws: Path, mode: str = "auto") -> HookContext:
    return HookContext("sess-1", ws, mode)


def gate_with(ws: Path, answer: dict[str, Any] | None, p: PermissionPolicy) -> PermissionGate:
    runner = HookRunner(workspace=ws)

    async def hook(payload: dict[str, Any]) -> dict[str, Any] | None:
        return answer

    runner.register("PreToolUse", hook)
    return PermissionGate(p, runner)


def pre(decision: str, **extra: Any) -> dict[str, Any]:
    out = {"hookEventName": "PreToolUse", "permissionDecision": decision}
    return {
        "hookSpecificOutput": {**out, "permissionDecisionReason": f"hook says {decision}", **extra}
    }


async def test_gate_without_hooks_is_the_policy(tmp_path: Path):
    gate = PermissionGate(policy(tmp_path, "ask"))
    res = await gate.check("write_file", {"path": "a"}, context=ctx(tmp_path))
    assert (res.decision.decision, res.decision.by, res.hooks) == ("ask", "mode", [])


async def test_hook_allow_skips_a_mode_ask(tmp_path: Path):
    res = await gate_with(tmp_path, pre("allow"), policy(tmp_path, "ask")).check(
        "write_file", {"path": "a"}, context=ctx(tmp_path, "ask")
    )
    assert (res.decision.decision, res.decision.by) == ("allow", "hook")


@pytest.mark.parametrize(
    ("rules", "command", "expected"),
    [
        ({"ask": ["Bash(make:*)"]}, "make", ("ask", "rule")),
        ({"deny": ["Bash(make:*)"]}, "make", ("deny", "rule")),
        ({}, "git push --force", ("ask", "guard")),
        ({}, "rm -rf /", ("deny", "guard")),
    ],
)
async def test_hook_allow_never_overrides_rules_or_guard(
    tmp_path: Path, rules: dict[str, list[str]], command: str, expected: tuple[str, str]
):
    gate = gate_with(tmp_path, pre("allow"), policy(tmp_path, **rules))
    res = await gate.check("run_shell", {"command": command}, context=ctx(tmp_path))
    assert (res.decision.decision, res.decision.by) == expected


async def test_hook_allow_does_not_lift_plan_mode(tmp_path: Path):
    gate = gate_with(tmp_path, pre("allow"), policy(tmp_path, "plan"))
    res = await gate.check("write_file", {"path": "a"}, context=ctx(tmp_path, "plan"))
    assert res.decision.decision == "deny"


@pytest.mark.parametrize("said", ["deny", "ask"])
async def test_hook_deny_and_ask_win_over_an_allowing_policy(tmp_path: Path, said: str):
    gate = gate_with(tmp_path, pre(said), policy(tmp_path, allow=["Edit"]))
    res = await gate.check("write_file", {"path": "a"}, context=ctx(tmp_path))
    assert (res.decision.decision, res.decision.by) == (said, "hook")
    assert res.decision.reason == f"hook says {said}"


async def test_updated_input_is_what_the_policy_judges(tmp_path: Path):
    answer = pre("allow", updatedInput={"command": "rm -rf /"})
    gate = gate_with(tmp_path, answer, policy(tmp_path))
    res = await gate.check("run_shell", {"command": "ls"}, context=ctx(tmp_path))
    assert res.args == {"command": "rm -rf /"}
    assert res.decision.decision == "deny"
    answer = pre("allow", updatedInput={"file_path": str(tmp_path / "safe.txt")})
    gate = gate_with(tmp_path, answer, policy(tmp_path, "ask"))
    res = await gate.check("write_file", {"path": "x", "content": "c"}, context=ctx(tmp_path))
    assert res.args == {"path": "safe.txt", "content": "c"}
    assert res.decision.decision == "allow"


async def test_continue_false_stops_the_run(tmp_path: Path):
    gate = gate_with(tmp_path, {"continue": False, "stopReason": "budget spent"}, policy(tmp_path))
    res = await gate.check("read_file", {"path": "a"}, context=ctx(tmp_path))
    assert res.stop_run and res.stop_reason == "budget spent"
    assert (res.decision.decision, res.decision.by) == ("deny", "hook")


async def test_context_and_messages_are_passed_on(tmp_path: Path):
    answer = {"systemMessage": "careful", **pre("allow", additionalContext="tests live in t/")}
    res = await gate_with(tmp_path, answer, policy(tmp_path)).check(
        "read_file", {"path": "a"}, context=ctx(tmp_path)
    )
    assert res.additional_context == ["tests live in t/"] and res.system_messages == ["careful"]


async def test_a_broken_hook_is_reported_and_the_policy_decides(tmp_path: Path):
    runner = HookRunner(workspace=tmp_path)

    async def broken(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    runner.register("PreToolUse", broken)
    res = await PermissionGate(policy(tmp_path, "ask"), runner).check(
        "write_file", {"path": "a"}, context=ctx(tmp_path)
    )
    assert res.decision.decision == "ask" and res.decision.by == "mode"
    assert len(res.hooks) == 1 and "RuntimeError: boom" in (res.hooks[0].error or "")


# --------------------------------------------------------------------------- settings files


def write_settings(ws: Path, name: str, data: object) -> None:
    (ws / ".claude").mkdir(exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data)
    (ws / ".claude" / name).write_text(text)


def test_load_claude_settings_merges_both_files(tmp_path: Path):
    hook = {"matcher": "Bash", "hooks": [{"type": "command", "command": "true"}]}
    write_settings(tmp_path, "settings.json", {
        "permissions": {"allow": ["Bash(npm:*)"], "deny": ["Read(.env)"], "defaultMode": "ask"},
        "hooks": {"PreToolUse": [hook]}, "model": "ignored",
    })  # fmt: skip
    write_settings(tmp_path, "settings.local.json", {
        "permissions": {"allow": ["Bash(npm:*)", "Bash(make:*)"], "defaultMode": "acceptEdits"},
        "hooks": {"PreToolUse": [hook], "Stop": [{"hooks": []}]},
    })  # fmt: skip
    s = load_claude_settings(tmp_path)
    assert s["permissions"] == {
        "allow": ["Bash(npm:*)", "Bash(make:*)"],
        "ask": [],
        "deny": ["Read(.env)"],
        "defaultMode": "acceptEdits",
    }
    assert len(s["hooks"]["PreToolUse"]) == 2 and s["hooks"]["Stop"] == [{"hooks": []}]
    PermissionPolicy(workspace=tmp_path, **{k: s["permissions"][k] for k in ("allow", "deny")})
    HookRunner(s["hooks"], workspace=tmp_path)


def test_load_claude_settings_tolerates_missing_files(tmp_path: Path):
    assert load_claude_settings(tmp_path) == {
        "permissions": {"allow": [], "ask": [], "deny": []},
        "hooks": {},
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"permissions": {"allow": "Bash"}}, "permissions.allow"),
        ({"permissions": []}, "'permissions' must be an object"),
        ({"hooks": {"PreToolUse": {}}}, "hooks.PreToolUse"),
    ],
)
def test_load_claude_settings_reports_bad_files(tmp_path: Path, content: object, message: str):
    write_settings(tmp_path, "settings.local.json", content)
    with pytest.raises(ConfigError, match=message) as err:
        load_claude_settings(tmp_path)
    assert err.value.file == str(tmp_path / ".claude" / "settings.local.json")
