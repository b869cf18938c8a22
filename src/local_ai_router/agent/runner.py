"""Runs agent loops for the server and the CLI: wiring, persistence, live event fan-out.

An :class:`AgentService` owns the active runs of one process. Each run gets its
own tool registry, permission gate, hooks and tool context (nothing shared
between runs but the gateway and the database), its events are fanned out to
any number of subscribers (SSE clients, the CLI) and replayed to late ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..gateway.service import Gateway
from ..mcp import McpManager
from ..mcp_config import mcp_configs
from ..skills import SkillIndex
from ..store.agent_store import AgentStore, StepRecord, new_id
from ..tools.agents import spawn_agents
from ..tools.browser import SERVICE as BROWSER_SERVICE
from ..tools.browser import browser_available, browser_tools
from ..tools.builtin import builtin_tools
from ..tools.control import control_tools
from ..tools.registry import ToolContext, ToolRegistry, scrubbed_env
from ..tools.skills import skill_tools
from ..tools.web import web_fetch
from ..types import Event, Message
from .compaction import Compactor
from .gate import LoopGate, PermissionGate
from .hooks import HookContext
from .loop import AgentLoop, RunResult, RunSpec
from .model_client import GatewayModelClient
from .permissions import stricter_mode
from .policy_setup import RunPolicy, build_run_policy
from .seams import GateResult, deny_approver
from .subagents import AgentDefinition, Spawner, builtin_definitions, load_definitions
from .subagents import listing as agents_listing

__all__ = ["ActiveRun", "AgentService", "RunRequest", "StoreRecorder"]

log = logging.getLogger(__name__)

# Skills are named in the system prompt within this many characters (the rest: search_skills);
# the first request must stay near 1,200 tokens for an 8K card (bench/prompt_budget.py).
SKILLS_LISTING_CHARS = 180


def _in_git_work_tree(path: Path) -> bool:
    return any((p / ".git").exists() for p in (path, *path.parents))


def _custom_agents(definitions: dict[str, AgentDefinition]) -> str:
    """The prompt lists agent types only when there are more than the built-ins, which
    spawn_agents' own description names (every prompt token counts on an 8K card)."""
    if set(definitions) <= set(builtin_definitions()):
        return ""
    return agents_listing(definitions, 300)


class _CompactionReport:
    """Stands in for a loop when a stored session is compacted outside any run."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {
            "before_tokens": 0,
            "after_tokens": 0,
            "messages_removed": 0,
        }
        self.hooks = self

    async def pre_compact(self, loop: Any) -> None:
        return None  # the service runs PreCompact itself, with trigger "manual"

    def emit(self, type_: str, **data: Any) -> None:
        if type_ == "compaction":
            self.figures = data


class StoreRecorder:
    """Persists a run: one transaction per step, audit rows, the run's end."""

    def __init__(self, store: AgentStore):
        self.store = store
        self._records: list[StepRecord] = []
        self._audits: list[dict[str, Any]] = []

    def add_record(self, loop: AgentLoop, step: int, kind: str, **fields: Any) -> None:
        self._records.append(StepRecord(step=step, kind=kind, **fields))

    def commit_step(
        self,
        loop: AgentLoop,
        step: int,
        new_messages: list[Message],
        first_seq: int,
        replace_all: bool = False,
    ) -> Awaitable[None]:
        # Snapshot now: the loop writes in the background while the next step starts.
        records, self._records = self._records, []
        audits, self._audits = self._audits, []
        u = loop.result.usage
        return self.store.commit_step(
            run_id=loop.spec.run_id,
            session_id=loop.spec.session_id,
            first_seq=first_seq,
            new_messages=new_messages,
            records=records,
            step=step,
            usage=(u.prompt_tokens, u.completion_tokens),
            replace_all=replace_all,
            audits=audits,
        )

    async def audit(
        self,
        loop: AgentLoop,
        tool: str,
        args: dict[str, Any],
        verdict: GateResult,
        request_id: str | None,
    ) -> None:
        # Stored with the step's transaction: one commit per step, not one per decision.
        self._audits.append(
            {
                "run_id": loop.spec.run_id,
                "session_id": loop.spec.session_id,
                "tool": tool,
                "args": args,
                "decision": verdict.decision,
                "by": verdict.by,
                "reason": verdict.reason,
                "request_id": request_id,
                "created_at": time.time(),
            }
        )

    async def finish(self, loop: AgentLoop, result: RunResult) -> None:
        await self.store.finish_run(
            loop.spec.run_id, result.status, result.final_answer, result.error
        )


@dataclass
class RunRequest:
    task: str
    workspace: Path
    model: str | None = None
    max_steps: int | None = None
    session_id: str | None = None
    permission_mode: str | None = None
    tool_mode: str = "auto"
    parent_run_id: str | None = None
    interactive: bool = False  # someone can answer permission requests (SSE, terminal)
    system_prompt: str | None = None
    tools: list[str] | None = None  # restrict to these tool names (agent definitions)
    depth: int = 0  # 0 for a top-level run, parent's + 1 for a subagent
    stream: bool = False  # someone watches live: stream the model's tokens (model_delta)


@dataclass
class ActiveRun:
    loop: AgentLoop
    request: RunRequest
    events: list[Event] = field(default_factory=list)
    subscribers: set[asyncio.Queue[Event | None]] = field(default_factory=set)
    approvals: dict[str, asyncio.Future[tuple[str, bool]]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    mcp: McpManager | None = None
    parent: ActiveRun | None = None  # subagents stream their events into the parent's
    policy: RunPolicy | None = None

    @property
    def run_id(self) -> str:
        return self.loop.spec.run_id

    def publish(self, ev: Event) -> None:
        self.events.append(ev)
        for q in self.subscribers:
            q.put_nowait(ev)

    async def stream(self) -> AsyncIterator[Event]:
        """Every event of the run so far, then the live ones until it ends."""
        q: asyncio.Queue[Event | None] = asyncio.Queue()
        backlog = list(self.events)
        self.subscribers.add(q)
        if self.done.is_set():
            q.put_nowait(None)
        try:
            # The backlog copy and the subscription happen with no await between: no gap, no repeat.
            for ev in backlog:
                yield ev
            while (ev := await q.get()) is not None:
                yield ev
        finally:
            self.subscribers.discard(q)


class AgentService:
    def __init__(self, settings: Settings, gateway: Gateway, store: AgentStore):
        self.settings = settings
        self.gateway = gateway
        self.store = store
        self.model_client = GatewayModelClient(gateway)
        self.active: dict[str, ActiveRun] = {}

    async def start(self) -> None:
        n = await self.store.mark_interrupted_runs()
        if n:
            log.warning("%d run(s) were interrupted by the last shutdown", n)

    async def stop(self) -> None:
        for run in list(self.active.values()):
            run.loop.cancel()
        for run in list(self.active.values()):
            if run.task:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(run.task), 10)

    # ------------------------------------------------------------ building a run

    def tools_for(self, req: RunRequest) -> ToolRegistry:
        registry = ToolRegistry([*builtin_tools(), *skill_tools(), *control_tools()])
        if self.settings.agent.web_tools:
            registry.register(web_fetch)
            for t in browser_tools() if browser_available() else ():
                registry.register(t)
        if req.depth < self.settings.agent.subagents.max_depth:
            registry.register(spawn_agents)
        if req.tools is not None:
            keep = set(req.tools) | {"task_complete"}
            registry = registry.subset([n for n in registry.names() if n in keep])
        return registry

    async def _spec(
        self, req: RunRequest, rp: RunPolicy
    ) -> tuple[RunSpec, ToolContext, ToolRegistry]:
        cfg = self.settings.agent
        workspace = req.workspace.resolve()
        history: list[Message] = []
        if req.session_id:
            if await self.store.get_session(req.session_id) is None:
                raise KeyError(f"session {req.session_id!r} not found")
            session_id = req.session_id
            history = await self.store.messages(session_id)
        else:
            kind = "child" if req.parent_run_id else "main"
            session_id = await self.store.create_session(str(workspace), req.task[:200], kind=kind)
        skills = await SkillIndex.adiscover(cfg.skills_dirs, workspace=workspace)
        tools = self.tools_for(req)
        # No skill folders: the skill tools would only cost prompt tokens and tempt small models.
        hidden = set() if len(skills) else {t.name for t in skill_tools()}
        if not _in_git_work_tree(workspace):  # git tools there only fail (and tempt small models)
            hidden |= {n for n in tools.names() if n.startswith("git_")}
        tools = tools.subset(
            [n for n in tools.names() if rp.policy.is_tool_offered(n) and n not in hidden]
        )
        definitions, problems = load_definitions(workspace, cfg.subagents.definitions)
        for p in problems:
            log.warning("agent definition skipped: %s", p)
        run_id = new_id("run")
        spec = RunSpec(
            task=req.task,
            workspace=workspace,
            run_id=run_id,
            session_id=session_id,
            model=req.model or cfg.model,
            max_steps=req.max_steps or cfg.max_steps,
            max_tokens=cfg.max_tokens,
            temperature=cfg.temperature,
            tool_mode=req.tool_mode,
            history=history,
            parent_run_id=req.parent_run_id,
            system_prompt=req.system_prompt,
            skills_listing=skills.prompt_listing(SKILLS_LISTING_CHARS) if len(skills) else "",
            agents_listing=_custom_agents(definitions) if "spawn_agents" in tools else "",
            permission_mode=rp.policy.mode,
            stream=req.stream,
        )
        ctx = ToolContext(
            workspace=workspace,
            env=scrubbed_env(),
            output_limit=cfg.tool_output_limit,
            run_id=run_id,
            session_id=session_id,
            services={
                "skills": skills,
                "definitions": definitions,
                "read_denied": rp.policy.read_denied,
                "web_allow_private": cfg.web_allow_private,
            },
        )
        if rp.shell_wrapper is not None:
            ctx.services["shell_wrapper"] = rp.shell_wrapper
        return spec, ctx, tools

    async def _mcp(self, workspace: Path) -> tuple[McpManager | None, list[Any]]:
        """Start the run's MCP servers; failures are reported, the run goes on without them."""
        configs = mcp_configs(self.settings, workspace)
        if not configs:
            return None, []
        manager = McpManager(configs, base_env=scrubbed_env())
        return manager, await manager.start()

    def _policy(self, req: RunRequest, parent: ActiveRun | None) -> RunPolicy:
        """A child shares its parent's rules, session allows and hooks (its own mode if set)."""
        if parent is None or parent.policy is None:
            return build_run_policy(
                self.settings.agent, req.workspace.resolve(), req.permission_mode
            )
        prp = parent.policy
        if not req.permission_mode or req.permission_mode == prp.policy.mode:
            return prp
        policy = prp.policy.with_mode(req.permission_mode)
        return RunPolicy(
            policy,
            prp.runner,
            LoopGate(PermissionGate(policy, prp.runner)),
            prp.hooks,
            prp.shell_wrapper,
        )

    async def start_run(self, req: RunRequest, *, parent: ActiveRun | None = None) -> ActiveRun:
        rp = self._policy(req, parent)
        spec, ctx, tools = await self._spec(req, rp)
        mcp, failures = await self._mcp(spec.workspace)
        if mcp is not None:
            offered = set(req.tools) if req.tools is not None else None
            for t in mcp.tools():
                if (offered is None or t.name in offered) and rp.policy.is_tool_offered(t.name):
                    tools.register(t)
        await self.store.create_run(
            run_id=spec.run_id,
            session_id=spec.session_id,
            task=spec.task,
            model=spec.model,
            workspace=str(spec.workspace),
            parent_run_id=spec.parent_run_id,
        )
        info = await self.model_client.resolve(spec.model)
        compactor = Compactor(
            self.model_client,
            self.settings.agent.compaction,
            model_name=info.model,
            window=info.context_window,
            max_tokens=spec.max_tokens,
            task=spec.task,
        )
        loop = AgentLoop(
            spec,
            model=self.model_client,
            tools=tools,
            ctx=ctx,
            recorder=StoreRecorder(self.store),
            compactor=compactor,
            gate=rp.gate,
            hooks=rp.hooks,
        )
        for warning in rp.runner.warnings:
            loop.emit("error", kind="hook", message=warning)
        for f in failures:
            loop.emit(
                "error", kind="mcp", message=f"MCP server {f.server!r} did not start: {f.error}"
            )
        run = ActiveRun(loop=loop, request=req, mcp=mcp, parent=parent, policy=rp)
        if parent is not None:
            loop.approver = parent.loop.approver  # whoever answers the parent answers its children
        else:
            loop.approver = self._approver(run) if req.interactive else deny_approver
        if "spawn_agents" in tools:
            sub = self.settings.agent.subagents
            ctx.services["spawner"] = Spawner(
                self,
                run,
                ctx.services["definitions"],
                max_concurrent=sub.max_concurrent,
                timeout_s=sub.timeout_s,
            )
        self.active[spec.run_id] = run
        run.task = asyncio.create_task(self._drive(run), name=f"agent-run:{spec.run_id}")
        return run

    async def _drive(self, run: ActiveRun) -> None:
        try:
            async for ev in run.loop.run():
                run.publish(ev)
                if run.parent is not None:
                    run.parent.loop.forward(ev)
        finally:
            if run.mcp is not None:
                await run.mcp.aclose()
            browser = run.loop.ctx.services.pop(BROWSER_SERVICE, None)
            if browser is not None:
                await browser.aclose()
            run.done.set()
            for q in run.subscribers:
                q.put_nowait(None)
            self.active.pop(run.run_id, None)

    def _approver(self, run: ActiveRun) -> Any:
        timeout = self.settings.agent.ask_timeout_s

        async def approve(
            loop: AgentLoop, request_id: str, tool: str, args: dict[str, Any], verdict: GateResult
        ) -> GateResult:
            fut: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
            run.approvals[request_id] = fut
            try:
                decision, remember = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                return GateResult(
                    "deny", "default", f"no answer within {timeout:g}s (ask_timeout_s)"
                )
            finally:
                run.approvals.pop(request_id, None)
            if decision == "allow" and remember and run.policy is not None:
                added = run.policy.policy.remember(tool, args)
                return GateResult(
                    "allow", "user", f"allowed by the user; remembered: {', '.join(added)}"
                )
            return GateResult(decision, "user", f"{decision} by the user")

        return approve

    # ------------------------------------------------------------ control

    async def compact_session(self, session_id: str, model: str | None = None) -> dict[str, Any]:
        """Compact a stored conversation now (``POST /agent/sessions/{id}/compact``).

        KeyError: no such session; RuntimeError: a run is using it right now.
        """
        session = await self.store.get_session(session_id)
        if session is None:
            raise KeyError(f"session {session_id!r} not found")
        if any(r.loop.spec.session_id == session_id for r in self.active.values()):
            raise RuntimeError(f"session {session_id!r} has an active run; compact it afterwards")
        cfg = self.settings.agent
        workspace = Path(session["workspace"])
        rp = build_run_policy(
            cfg.model_copy(update={"load_claude_settings": False}), workspace, None
        )
        await rp.runner.run(
            "PreCompact",
            HookContext(session_id, workspace, rp.policy.mode),
            match=["manual"],
            trigger="manual",
            custom_instructions="",
        )
        info = await self.model_client.resolve(model or cfg.model)
        compactor = Compactor(
            self.model_client,
            cfg.compaction,
            model_name=info.model,
            window=info.context_window,
            max_tokens=cfg.max_tokens,
        )
        messages = [{"role": "system", "content": ""}, *await self.store.messages(session_id)]
        report = _CompactionReport()
        out = await compactor.fit(report, messages, harder=True)  # type: ignore[arg-type]
        if out is not messages:
            await self.store.replace_messages(session_id, out[1:])
        return {
            "session_id": session_id,
            "messages_before": len(messages) - 1,
            "messages_after": len(out) - 1,
            **report.figures,
        }

    def cancel(self, run_id: str) -> bool:
        run = self.active.get(run_id)
        if run is None:
            return False
        run.loop.cancel()
        return True

    async def start_child(self, parent: ActiveRun, d: AgentDefinition, prompt: str) -> ActiveRun:
        """A subagent of ``parent``: fresh context, the definition's prompt, tools and limits."""
        preq = parent.request
        req = RunRequest(
            task=prompt,
            workspace=parent.loop.spec.workspace,
            model=d.model or parent.loop.spec.model,
            max_steps=d.max_steps or preq.max_steps,
            permission_mode=stricter_mode(parent.loop.spec.permission_mode, d.permission_mode),
            tool_mode=preq.tool_mode,
            parent_run_id=parent.run_id,
            interactive=preq.interactive,
            system_prompt=d.prompt or None,
            tools=list(d.tools) if d.tools is not None else None,
            depth=preq.depth + 1,
            stream=preq.stream,
        )
        child = await self.start_run(req, parent=parent)
        if parent.policy is not None:
            await parent.policy.hooks.subagent_start(parent.loop, child.run_id, d.name)
        return child

    def answer(self, run_id: str, request_id: str, decision: str, remember: bool = False) -> bool:
        run = self.active.get(run_id)
        fut = run.approvals.get(request_id) if run else None
        if fut is None:  # a subagent's request waits in the run whose approver it shares
            fut = next(
                (
                    r.approvals[request_id]
                    for r in self.active.values()
                    if request_id in r.approvals
                ),
                None,
            )
        if fut is None or fut.done():
            return False
        fut.set_result((decision, remember))
        return True

    async def run_to_end(self, req: RunRequest) -> dict[str, Any]:
        run = await self.start_run(req)
        assert run.task is not None
        await asyncio.shield(run.task)
        return run.loop.result.to_dict(run.loop.spec)
