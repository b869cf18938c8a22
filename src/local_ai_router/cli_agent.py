"""Agent commands of ``lar``: run, chat, sessions, skills (registered on import by cli.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .agent.loop import AgentLoop
from .agent.runner import RunRequest
from .agent.seams import GateResult
from .cli import (
    ConfigOpt,
    WorkspaceOpt,
    app,
    err,
    fail,
    out,
    run_async,
    sessions_app,
    settings_or_exit,
    skills_app,
)
from .cli_render import EventRenderer
from .config import Settings
from .runtime import Runtime

__all__ = ["run"]

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text | json | stream-json")]


def _terminal_approver(renderer: EventRenderer, active: Any) -> Any:
    """Ask on the terminal: yes / no / always (adds a session allow rule, as Claude Code does)."""

    async def approve(
        loop: AgentLoop, request_id: str, tool: str, args: dict[str, Any], verdict: GateResult
    ) -> GateResult:
        answer = await asyncio.to_thread(renderer.ask, tool, args, verdict.reason)
        if answer == "always" and active.policy is not None:
            added = active.policy.policy.remember(tool, args)
            return GateResult("allow", "user", f"always allowed this session: {', '.join(added)}")
        return GateResult("allow" if answer == "yes" else "deny", "user", f"{answer} by the user")

    return approve


async def _resolve_session(
    rt: Runtime, workspace: Path, resume: str | None, cont: bool, fork: str | None
) -> str | None:
    if fork:
        try:
            return await rt.agent_store.fork_session(fork)
        except KeyError:
            fail(f"session {fork!r} not found (see 'lar sessions list')")
    if resume:
        if await rt.agent_store.get_session(resume) is None:
            fail(f"session {resume!r} not found (see 'lar sessions list')")
        return resume
    if cont:
        sid = await rt.agent_store.latest_session(str(workspace))
        if sid is None:
            fail(f"no earlier session in {workspace} to continue")
        return sid
    return None


async def _run_local(
    settings: Settings,
    req: RunRequest,
    output: str,
    resume: str | None,
    cont: bool,
    fork: str | None,
) -> int:
    rt = Runtime.create(settings)
    await rt.start()
    try:
        req.session_id = await _resolve_session(rt, req.workspace, resume, cont, fork)
        renderer = EventRenderer(output)
        active = await rt.agent.start_run(req)
        if req.interactive:
            active.loop.approver = _terminal_approver(renderer, active)
        return await _consume(active.stream(), renderer, rt, active.run_id)
    finally:
        await rt.stop()


async def _consume(
    events: AsyncIterator[Any], renderer: EventRenderer, rt: Runtime | None, run_id: str
) -> int:
    final: dict[str, Any] = {}
    try:
        async for ev in events:
            data = ev if isinstance(ev, dict) else ev.to_dict()
            renderer.render(data)
            if data["type"] == "run_finished" and data["run_id"] == run_id:
                final = data
    except (KeyboardInterrupt, asyncio.CancelledError):
        if rt is not None:
            rt.agent.cancel(run_id)
        raise
    renderer.finish(final)
    return 0 if final.get("status") == "completed" else 1


def _server_error(r: Any) -> str:
    try:
        return f"server answered {r.status_code}: {r.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"server answered {r.status_code}: {r.text[:300]}"


async def _remote_session(
    http: Any, base: str, workspace: Path, resume: str | None, cont: bool, fork: str | None
) -> str | None:
    """--resume / --continue / --fork against a server: the same meaning as in-process."""
    if fork:
        r = await http.post(f"{base}/agent/sessions/{fork}/fork")
        if r.status_code == 404:
            fail(f"session {fork!r} not found on {base} (see 'lar sessions list')")
        if r.status_code >= 400:
            fail(_server_error(r))
        return str(r.json()["session_id"])
    if cont:
        r = await http.get(
            f"{base}/agent/sessions", params={"workspace": str(workspace), "limit": 1}
        )
        if r.status_code >= 400:
            fail(_server_error(r))
        found = r.json()["sessions"]
        if not found:
            fail(f"no earlier session in {workspace} on {base} to continue")
        return str(found[0]["id"])
    return resume


async def _run_remote(
    server: str,
    req: RunRequest,
    output: str,
    resume: str | None,
    cont: bool = False,
    fork: str | None = None,
) -> int:
    import os

    import httpx2

    headers = {"accept": "text/event-stream"}
    if os.environ.get("LAR_API_KEY"):
        headers["authorization"] = f"Bearer {os.environ['LAR_API_KEY']}"
    renderer = EventRenderer(output)
    base = server.rstrip("/")
    can_answer = sys.stdin.isatty()
    timeout = httpx2.Timeout(30, read=None)
    async with httpx2.AsyncClient(timeout=timeout, headers=headers) as http:
        session = await _remote_session(http, base, req.workspace, resume, cont, fork)
        body = {
            "task": req.task,
            "workspace": str(req.workspace),
            "stream": True,
            "model": req.model,
            "max_steps": req.max_steps,
            "session_id": session,
            "permission_mode": req.permission_mode,
            "tool_mode": req.tool_mode,
            "interactive": can_answer,  # headless: the server denies asks at once
        }
        body = {k: v for k, v in body.items() if v is not None}
        async with http.stream("POST", f"{base}/agent/run", json=body) as r:
            if r.status_code >= 400:
                await r.aread()
                fail(_server_error(r))
            return await _consume_remote(http, base, r, renderer, can_answer)


async def _consume_remote(
    http: Any, base: str, r: Any, renderer: EventRenderer, can_answer: bool
) -> int:
    run_id = r.headers.get("x-run-id", "")

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if data["type"] == "permission_request" and can_answer:
                answer = await asyncio.to_thread(
                    renderer.ask, data["tool"], data["args"], data.get("reason", "")
                )
                decision = "allow" if answer in ("yes", "always") else "deny"
                await http.post(
                    f"{base}/agent/runs/{data['run_id']}/approvals/{data['request_id']}",
                    json={"decision": decision, "remember": answer == "always"},
                )
            yield data

    return await _consume(events(), renderer, None, run_id)


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="What the agent should do.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = ".",
    model: Annotated[
        str | None, typer.Option(help="Model or alias (default: agent.model).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, max=1000)] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue session ID.")] = None,
    cont: Annotated[
        bool, typer.Option("--continue", help="Continue the latest session here.")
    ] = False,
    fork: Annotated[
        str | None, typer.Option("--fork", help="Copy session ID and continue the copy.")
    ] = None,
    permission_mode: Annotated[
        str | None, typer.Option(help="auto ask acceptEdits plan bypassPermissions")
    ] = None,
    tool_mode: Annotated[str, typer.Option(help="auto native text constrained")] = "auto",
    output: OutputOpt = "text",
    server: Annotated[
        str | None, typer.Option(help="Run on this server instead of in-process.")
    ] = None,
) -> None:
    """Run one agent task headless."""
    if output not in ("text", "json", "stream-json"):
        fail(f"--output must be text, json or stream-json, not {output!r}")
    if tool_mode not in ("auto", "native", "text", "constrained"):
        fail(f"--tool-mode must be auto, native, text or constrained, not {tool_mode!r}")
    modes = ("auto", "ask", "acceptEdits", "plan", "bypassPermissions", "default")
    if permission_mode and permission_mode not in modes:
        fail(f"--permission-mode must be one of {', '.join(modes)}")
    ws = Path(workspace).expanduser().resolve()
    if not ws.is_dir():
        fail(f"workspace {workspace!r} is not a directory")
    settings = settings_or_exit(config)
    interactive = output == "text" and sys.stdin.isatty()
    req = RunRequest(
        task=task,
        workspace=ws,
        model=model,
        max_steps=max_steps,
        permission_mode=permission_mode,
        tool_mode=tool_mode,
        interactive=interactive,
        stream=output != "json",
    )
    if server:
        code = run_async(lambda: _run_remote(server, req, output, resume, cont, fork))
    else:
        code = run_async(lambda: _run_local(settings, req, output, resume, cont, fork))
    raise typer.Exit(code)


@app.command()
def chat(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = ".",
    model: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Interactive session: each line is a task; the conversation carries over."""
    from prompt_toolkit import PromptSession

    settings = settings_or_exit(config)
    ws = Path(workspace).expanduser().resolve()

    async def repl() -> None:
        rt = Runtime.create(settings)
        await rt.start()
        session_id: str | None = None
        prompt: PromptSession[str] = PromptSession()
        renderer = EventRenderer("text")
        err.print(
            "lar chat: type a task; /exit to quit, /new for a fresh session.", highlight=False
        )
        try:
            while True:
                try:
                    line = (await prompt.prompt_async("you> ")).strip()
                except (EOFError, KeyboardInterrupt):
                    break
                if not line:
                    continue
                if line in ("/exit", "/quit"):
                    break
                if line == "/new":
                    session_id = None
                    continue
                req = RunRequest(
                    task=line,
                    workspace=ws,
                    model=model,
                    session_id=session_id,
                    interactive=True,
                    stream=True,
                )
                active = await rt.agent.start_run(req)
                active.loop.approver = _terminal_approver(renderer, active)
                session_id = active.loop.spec.session_id
                await _consume(active.stream(), renderer, rt, active.run_id)
        finally:
            await rt.stop()

    run_async(repl)


# --------------------------------------------------------------------------- sessions


def _with_store(config: str | None, fn: Any) -> Any:
    from .store.agent_store import AgentStore
    from .store.db import Database

    settings = settings_or_exit(config)

    async def go() -> Any:
        db = await Database(settings.storage.url).open()
        try:
            return await fn(AgentStore(db))
        finally:
            await db.close()

    return run_async(go)


@sessions_app.command("list")
def sessions_list(
    config: ConfigOpt = None,
    limit: int = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Stored sessions, newest first."""
    rows = _with_store(config, lambda s: s.list_sessions(limit))
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    import time

    table = Table("id", "updated", "messages", "workspace", "title")
    for r in rows:
        table.add_row(
            r["id"],
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated_at"])),
            str(r["message_count"]),
            r["workspace"],
            (r["title"] or "")[:60],
        )
    out.print(table)


@sessions_app.command("show")
def sessions_show(
    session_id: str,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A session's conversation."""

    async def get(store: Any) -> Any:
        found = await store.get_session(session_id)
        if found is None:
            return None
        return {
            **found,
            "messages": await store.messages(session_id),
            "runs": await store.session_runs(session_id),
        }

    found = _with_store(config, get)
    if found is None:
        fail(f"session {session_id!r} not found", 1)
    if as_json:
        print(json.dumps(found, default=str, indent=2))
        return
    out.print(
        f"[bold]{found['id']}[/] {found['workspace']} ({len(found['runs'])} runs)", highlight=False
    )
    for m in found["messages"]:
        text = m.get("content") or ""
        if m.get("tool_calls"):
            fn = m["tool_calls"][0]["function"]
            text = f"{text} → {fn['name']}({fn['arguments']})".strip()
        out.print(f"[cyan]{m['role']}[/]: {text[:400]}", highlight=False)


@sessions_app.command("rm")
def sessions_rm(session_id: str, config: ConfigOpt = None) -> None:
    """Delete a session and its runs."""
    if not _with_store(config, lambda s: s.delete_session(session_id)):
        fail(f"session {session_id!r} not found", 1)
    err.print(f"deleted {session_id}")


# --------------------------------------------------------------------------- skills


def _skills(config: str | None, workspace: str) -> Any:
    from .skills import SkillIndex

    settings = settings_or_exit(config)
    return SkillIndex.discover(
        settings.agent.skills_dirs, workspace=Path(workspace).expanduser().resolve()
    )


@skills_app.command("list")
def skills_list(config: ConfigOpt = None, workspace: WorkspaceOpt = ".") -> None:
    """Skills found in the configured directories."""
    index = _skills(config, workspace)
    table = Table("name", "category", "description")
    for s in index.list():
        table.add_row(s.name, s.category or "", s.description[:90])
    out.print(table)
    for p in index.problems:
        err.print(f"[yellow]warning:[/] {p}", highlight=False)


@skills_app.command("search")
def skills_search(query: str, config: ConfigOpt = None, workspace: WorkspaceOpt = ".") -> None:
    """Skills ranked for a query."""
    for skill, score in _skills(config, workspace).search(query, limit=10):
        out.print(f"{score:5.2f}  [bold]{skill.name}[/]  {skill.description[:90]}", highlight=False)


@skills_app.command("show")
def skills_show(name: str, config: ConfigOpt = None, workspace: WorkspaceOpt = ".") -> None:
    """A skill's instructions and files."""
    from .tools.skills import render_skill

    index = _skills(config, workspace)
    skill = index.get(name)
    if skill is None:
        hint = index.suggest(name)
        fail(f"no skill {name!r}" + (f"; did you mean: {', '.join(hint)}?" if hint else ""), 1)
    print(render_skill(skill, skill.load_body()))
