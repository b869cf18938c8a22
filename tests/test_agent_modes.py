"""Tool-calling modes, skills in a run, workspace escapes, and `lar run` output formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import run_events, run_lar
from local_ai_router.agent.runner import RunRequest
from local_ai_router.testing import Reply, ScriptedBackend, tool_call


def text_action(tool: str, args: dict[str, Any]) -> str:
    return json.dumps({"tool": tool, "args": args})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    skill = ws / ".claude" / "skills" / "release-notes"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        "---\nname: release-notes\ndescription: Write release notes from git history.\n---\n"
        "Run git_log, group commits by type, write NOTES.md. SKILL-BODY-MARKER\n"
    )
    (ws / "hello.txt").write_text("hello\n")
    return ws


async def run_task(
    make_settings,
    backend: ScriptedBackend,
    workspace: Path,
    *,
    kind: str = "vllm",
    tool_mode: str = "auto",
    task: str = "do it",
) -> list[dict[str, Any]]:
    settings = make_settings(
        backends=[
            {"name": "b", "url": backend.url, "kind": kind, "models": ["m"], "tool_mode": tool_mode}
        ],
        agent={"workspace": str(workspace)},
    )
    return await run_events(settings, RunRequest(task=task, workspace=workspace))


async def test_text_mode_describes_tools_in_the_prompt_and_sends_none(make_settings, workspace):
    script = [
        text_action("read_file", {"path": "hello.txt"}),
        text_action("task_complete", {"answer": "hi"}),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run_task(make_settings, backend, workspace, tool_mode="text")
    assert events[-1]["status"] == "completed" and events[-1]["final_answer"] == "hi"
    first, second = backend.requests
    assert "tools" not in first and "response_format" not in first
    system = first["messages"][0]["content"]
    assert "read_file(path: str, start_line?: int, end_line?: int)" in system
    assert '{"tool": "<name>", "args": {...}}' in system
    # History is rendered for a server without tool support: no tool role, no tool_calls.
    assert all(m["role"] != "tool" and "tool_calls" not in m for m in second["messages"])
    assert "hello" in second["messages"][-1]["content"]


async def test_constrained_mode_sends_an_action_schema(make_settings, workspace):
    script = [text_action("task_complete", {"answer": "ok"})]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run_task(make_settings, backend, workspace, tool_mode="constrained")
    assert events[-1]["status"] == "completed"
    rf = backend.requests[0]["response_format"]
    assert rf["type"] == "json_schema"
    branches = rf["json_schema"]["schema"]["oneOf"]
    by_tool = {b["properties"]["tool"]["const"]: b for b in branches}
    assert by_tool["read_file"]["properties"]["args"]["required"] == ["path"]


async def test_llamacpp_auto_mode_is_constrained_with_its_json_object_dialect(
    make_settings, workspace
):
    script = [text_action("task_complete", {"answer": "ok"})]
    async with ScriptedBackend(script, models=["m"], kind="llamacpp") as backend:
        events = await run_task(make_settings, backend, workspace, kind="llamacpp")
    assert events[-1]["status"] == "completed"
    rf = backend.requests[0]["response_format"]
    assert rf["type"] == "json_object" and "oneOf" in rf["schema"]  # llama.cpp 500s on json_schema


async def test_native_mode_falls_back_to_text_calls(make_settings, workspace):
    script = [
        "<tool_call>" + json.dumps({"name": "list_directory", "arguments": {}}) + "</tool_call>",
        Reply(tool_calls=[tool_call("task_complete", {"answer": "listed"})]),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run_task(make_settings, backend, workspace)
    assert [e["tool"] for e in events if e["type"] == "action"] == [
        "list_directory",
        "task_complete",
    ]
    assert "tools" in backend.requests[0]


async def test_skills_are_listed_found_and_read(make_settings, workspace):
    script = [
        Reply(tool_calls=[tool_call("search_skills", {"query": "release notes"})]),
        Reply(tool_calls=[tool_call("read_skill", {"name": "release-notes"})]),
        Reply(tool_calls=[tool_call("task_complete", {"answer": "read"})]),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run_task(make_settings, backend, workspace)
    system = backend.requests[0]["messages"][0]["content"]
    assert (
        "release-notes" in system and "SKILL-BODY-MARKER" not in system
    )  # name only, body on demand
    results = [e for e in events if e["type"] == "tool_result"]
    assert "release-notes" in results[0]["output"]
    assert "SKILL-BODY-MARKER" in results[1]["output"]


async def test_workspace_escapes_are_refused_and_the_run_goes_on(
    make_settings, workspace, tmp_path
):
    (tmp_path / "secret.txt").write_text("top secret")
    (workspace / "link").symlink_to(tmp_path / "secret.txt")
    script = [
        Reply(tool_calls=[tool_call("read_file", {"path": "../secret.txt"})]),
        Reply(tool_calls=[tool_call("read_file", {"path": "link"})]),
        Reply(tool_calls=[tool_call("write_file", {"path": "/tmp/evil.txt", "content": "x"})]),
        Reply(tool_calls=[tool_call("read_file", {"path": "/proc/self/environ"})]),
        Reply(tool_calls=[tool_call("task_complete", {"answer": "refused"})]),
    ]
    async with ScriptedBackend(script, models=["m"]) as backend:
        events = await run_task(make_settings, backend, workspace)
    results = [e for e in events if e["type"] == "tool_result"][:4]
    assert all(not r["ok"] and "outside the workspace" in r["error"] for r in results)
    assert all("top secret" not in json.dumps(r) for r in results)
    assert events[-1]["status"] == "completed"
    assert not Path("/tmp/evil.txt").exists()
    del backend


async def test_lar_run_output_formats(tmp_path, workspace):
    script = [
        Reply(tool_calls=[tool_call("read_file", {"path": "hello.txt"})]),
        Reply(tool_calls=[tool_call("task_complete", {"answer": "said hello"})]),
    ]
    async with ScriptedBackend(models=["m"]) as backend:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/c.db"},
                    "backends": [
                        {"name": "b", "url": backend.url, "kind": "vllm", "models": ["m"]}
                    ],
                }
            )
        )
        backend.add(*script)
        code, out, err = await run_lar(
            "run",
            "say hello",
            "-c",
            str(cfg),
            "-w",
            str(workspace),
            "--output",
            "stream-json",
            cwd=tmp_path,
        )
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]  # nothing but JSON on stdout
        assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert events[-1]["final_answer"] == "said hello"

        backend.add(*script)
        code, out, err = await run_lar(
            "run",
            "say hello",
            "-c",
            str(cfg),
            "-w",
            str(workspace),
            "--output",
            "text",
            cwd=tmp_path,
        )
        assert code == 0, err
        assert "read_file" in out and "said hello" in out and "completed" in out

        backend.add(Reply(status=400, error_message="model exploded"))
        code, out, err = await run_lar(
            "run", "fail", "-c", str(cfg), "-w", str(workspace), "-o", "json", cwd=tmp_path
        )
        assert code == 1 and json.loads(out)["status"] == "failed"

        code, _, err = await run_lar(
            "run", "x", "-c", str(cfg), "-w", str(tmp_path / "missing"), cwd=tmp_path
        )
        assert code == 2 and "not a directory" in err and "Traceback" not in err
        code, _, err = await run_lar("run", "x", "-c", str(cfg), "-o", "yaml", cwd=tmp_path)
        assert code == 2 and "--output" in err
