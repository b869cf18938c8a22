"""The agent loop: the model proposes one action per turn, the host decides and runs it.

One run, top to bottom::

    run_started
    for each step (up to max_steps):
        step_started
        ask the model (the conversation is compacted to fit its real window first)
        read its reply: one action, a plain message, or an invalid action
          action   -> validate args -> permission gate (may ask) -> run -> tool_result
          message  -> nudge once to act; a second message in a row ends the run
          invalid  -> tell the model what was wrong; three in a row fail the run
        commit the step (messages + step rows, one transaction)
    run_finished   (always last: completed / max_steps / cancelled / failed)

Everything that can go wrong inside a step is a message back to the model, not
an exception out of the run. The loop yields :class:`~local_ai_router.types.Event`
objects; the SSE endpoint, the CLI, metrics and persistence all consume them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..tools.registry import ToolContext, ToolOutcome, ToolRegistry
from ..types import (
    Action,
    BackendError,
    ContextLengthError,
    ContextTooLargeError,
    Event,
    InvalidAction,
    Message,
    ParsedReply,
    RoutingError,
    RunCancelled,
    ToolError,
    Usage,
)
from .actions import parse_reply
from .prompt import (
    NUDGE,
    action_schema,
    build_system_prompt,
    render_for_text_mode,
    tool_result_message,
)
from .seams import (
    AllowAll,
    Approver,
    Compactor,
    Gate,
    GateResult,
    LoopHooks,
    ModelClient,
    ModelInfo,
    NoCompaction,
    Recorder,
    deny_approver,
)

__all__ = ["AgentLoop", "RunResult", "RunSpec", "repair_dangling_calls"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_INVALID_IN_A_ROW = 3
CONTROL_TOOL = "task_complete"


@dataclass
class RunSpec:
    """What to run. History is the session's stored conversation (resume)."""

    task: str
    workspace: Path
    run_id: str
    session_id: str
    model: str = "auto"
    max_steps: int = 50
    max_tokens: int = 1024
    temperature: float | None = 0.2
    tool_mode: str = "auto"
    history: list[Message] = field(default_factory=list)
    parent_run_id: str | None = None
    system_prompt: str | None = None  # a subagent definition's body replaces the default
    skills_listing: str = ""
    agents_listing: str = ""
    permission_mode: str = "auto"
    stream: bool = False  # stream the model's replies as model_delta events


@dataclass
class RunResult:
    status: str = "running"
    final_answer: str | None = None
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    error: str | None = None

    def to_dict(self, spec: RunSpec) -> dict[str, Any]:
        return {
            "run_id": spec.run_id,
            "session_id": spec.session_id,
            "status": self.status,
            "final_answer": self.final_answer,
            "steps": self.steps,
            "usage": self.usage.to_dict(),
        }


class _Finish(Exception):
    """Ends the run from deep inside a step (carries the status)."""

    def __init__(self, status: str, answer: str | None = None, error: str | None = None):
        self.status, self.answer, self.error = status, answer, error
        super().__init__(status)


def repair_dangling_calls(history: list[Message]) -> list[Message]:
    """Give every tool call without a result one saying it was interrupted (a crash mid-tool)."""
    answered = {m.get("tool_call_id") for m in history if m.get("role") == "tool"}
    out: list[Message] = []
    for i, m in enumerate(history):
        out.append(m)
        if m.get("role") != "assistant":
            continue
        for call in m.get("tool_calls") or ():
            cid = call.get("id")
            if cid and cid not in answered:
                nxt = history[i + 1] if i + 1 < len(history) else None
                if nxt is None or nxt.get("tool_call_id") != cid:
                    name = (call.get("function") or {}).get("name", "tool")
                    out.append(
                        tool_result_message(
                            cid,
                            name,
                            "Error: interrupted: the run stopped before this tool finished.",
                        )
                    )
                    answered.add(cid)
    return out


class AgentLoop:
    def __init__(
        self,
        spec: RunSpec,
        *,
        model: ModelClient,
        tools: ToolRegistry,
        ctx: ToolContext | None = None,
        gate: Gate | None = None,
        approver: Approver | None = None,
        hooks: LoopHooks | None = None,
        recorder: Recorder | None = None,
        compactor: Compactor | None = None,
    ):
        self.spec = spec
        self.model = model
        self.tools = tools
        self.ctx = ctx or ToolContext(
            workspace=spec.workspace, run_id=spec.run_id, session_id=spec.session_id
        )
        self.gate = gate or AllowAll()
        self.approver = approver or deny_approver
        self.hooks = hooks or LoopHooks()
        self.recorder = recorder
        self.compactor = compactor or NoCompaction()
        self.result = RunResult()
        self.messages: list[Message] = []
        self._cancel = asyncio.Event()
        self._seq = 0
        self._pending: list[Event] = []  # events emitted before run() started
        self._queue: asyncio.Queue[Event | None] | None = None
        self._stored = 0  # messages[:_stored] are persisted (excluding the system prompt)
        self._info: ModelInfo | None = None
        self._mode = "native"
        self._rewrite = False  # stored messages must be replaced at the next commit
        self._deferred: list[tuple[str, dict[str, Any]]] = []  # events waiting for the commit
        self._held: list[Event] | None = None  # events emitted while a step is being stored
        self._writing: asyncio.Future[None] | None = None  # the step being stored
        self._extra_tokens = 0  # what tool / output schemas add to every request
        self._invalid_run = 0  # invalid actions in a row
        self._messages_run = 0  # replies without an action in a row

    # ------------------------------------------------------------ public

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def emit(self, type_: str, **data: Any) -> Event:
        """Queue an event (the seams call this too); run() yields them in order."""
        ev = Event(
            type=type_,
            run_id=self.spec.run_id,
            session_id=self.spec.session_id,
            seq=-1,
            data=data,
            parent_run_id=self.spec.parent_run_id,
        )
        if self._held is not None:  # a step is being stored: its events go out first
            self._held.append(ev)
        else:
            self._publish(ev)
        return ev

    def _publish(self, ev: Event) -> None:
        ev.seq = self._seq  # numbered when published, so seq follows stream order
        self._seq += 1
        if self._queue is not None:
            self._queue.put_nowait(ev)
        else:
            self._pending.append(ev)

    def forward(self, ev: Event) -> None:
        """Pass a subagent's event through this run's stream, unchanged."""
        if self._queue is not None:
            self._queue.put_nowait(ev)
        else:
            self._pending.append(ev)

    def emit_committed(self, type_: str, **data: Any) -> None:
        """Emit once the current step is stored: whoever saw it can rely on it after a crash."""
        self._deferred.append((type_, data))

    async def run(self) -> AsyncIterator[Event]:
        """The run's events, live, ending with ``run_finished``."""
        self._queue = asyncio.Queue()
        for ev in self._pending:
            self._queue.put_nowait(ev)
        self._pending = []
        driver = asyncio.create_task(self._drive(), name=f"loop:{self.spec.run_id}")
        try:
            while (ev := await self._queue.get()) is not None:
                yield ev
        finally:
            if not driver.done():  # the consumer left early: stop the run cleanly
                self.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await driver

    async def _drive(self) -> None:
        try:
            await self._start()
            step = 0
            while step < self.spec.max_steps:
                step += 1
                self.result.steps = step
                try:
                    await self._step(step)
                finally:
                    await self._commit(step)
            raise _Finish("max_steps", error=f"stopped after max_steps={self.spec.max_steps}")
        except _Finish as fin:
            await self._finish(fin.status, fin.answer, fin.error)
        except RunCancelled:
            await self._finish("cancelled", None, "cancelled")
        except Exception as exc:  # a bug must still end the run cleanly
            log.exception("agent run %s crashed", self.spec.run_id)
            self.emit("error", message=f"{type(exc).__name__}: {exc}", kind="internal")
            await self._finish("failed", None, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            assert self._queue is not None
            self._queue.put_nowait(None)

    # ------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        spec = self.spec
        self._info = await self.model.resolve(spec.model)
        self._mode = self._info.tool_mode if spec.tool_mode == "auto" else spec.tool_mode
        system = spec.system_prompt or ""
        prompt = build_system_prompt(
            str(spec.workspace),
            self.tools,
            mode=self._mode,
            skills_listing=spec.skills_listing,
            agents_listing=spec.agents_listing,
            extra=system,
        )
        history = repair_dangling_calls(list(spec.history))
        self.messages = [{"role": "system", "content": prompt}, *history]
        probe = self._request([])
        schema_parts = [probe.get("tools"), probe.get("response_format")]
        self._extra_tokens = (
            sum(len(json.dumps(p, separators=(",", ":"))) for p in schema_parts if p) // 4
        )
        self._stored = len(self.messages)
        # A repaired history is stored anew so the session stays valid for the next request.
        self._rewrite = len(history) != len(spec.history)
        self.emit("run_started", task=spec.task, model=self._info.model or spec.model)
        started = await self.hooks.session_start(self, "resume" if history else "startup")
        verdict = await self.hooks.user_prompt_submit(self, spec.task)
        if verdict.block:
            raise _Finish("failed", error=f"prompt blocked by hook: {verdict.reason}")
        notes = [n for n in (started.additional_context, verdict.additional_context) if n]
        task = spec.task + ("\n\n" + "\n".join(notes) if notes else "")
        self.messages.append({"role": "user", "content": task})

    async def _finish(self, status: str, answer: str | None, error: str | None) -> None:
        try:
            await self._settle()
        except Exception as exc:
            log.exception("storing the last step of run %s failed", self.spec.run_id)
            status, error = "failed", f"could not store the run: {exc}"
        r = self.result
        r.status, r.final_answer, r.error = status, answer, error
        if self.recorder:
            try:
                await self.recorder.finish(self, r)
            except Exception as exc:
                log.exception("recording the end of run %s failed", self.spec.run_id)
                self.emit("error", message=f"could not store the run's end: {exc}", kind="store")
        await self.hooks.session_end(self, r)
        self.emit("run_finished", **r.to_dict(self.spec), error=error)

    async def _commit(self, step: int) -> None:
        """Store the step in the background while the next model call goes out.

        The step's results are announced (and later events released) only once the write
        has landed, so whoever saw a result can rely on it after a crash; a failed write
        fails the run at the next step boundary.
        """
        await self._settle()
        deferred, self._deferred = self._deferred, []
        if not self.recorder:
            for type_, data in deferred:
                self.emit(type_, **data)
            return
        if self._rewrite:  # earlier messages changed (compaction, repair): store them anew
            write = self.recorder.commit_step(self, step, self.messages[1:], 0, replace_all=True)
            self._rewrite = False
        else:
            write = self.recorder.commit_step(
                self, step, self.messages[self._stored :], self._stored - 1
            )
        self._stored = len(self.messages)
        self._held = []
        self._writing = asyncio.ensure_future(self._land(write, deferred))

    async def _land(
        self, write: Awaitable[None], deferred: list[tuple[str, dict[str, Any]]]
    ) -> None:
        try:
            await write
        finally:
            held, self._held = self._held or [], None
            if sys.exc_info()[0] is None:
                for type_, data in deferred:
                    self.emit(type_, **data)
            for ev in held:
                self._publish(ev)

    async def _settle(self) -> None:
        """Wait for the step being stored; its failure is this run's failure."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def _guard(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the run is cancelled first."""
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self._cancel.wait())
        try:
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stopper.cancel()
        if task in done:
            return task.result()
        task.cancel()
        # Let the cancelled work clean up (kill a shell's process group, stop subagents)
        # before the run reports that it ended.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise RunCancelled("cancelled")

    # ------------------------------------------------------------ one step

    async def _step(self, step: int) -> None:
        if self.cancelled:
            raise RunCancelled("cancelled")
        self.emit("step_started", step=step)
        result = await self._ask_model()
        self.result.usage.add(result.usage)
        parsed = parse_reply(result.content, result.tool_calls, self.tools.names())
        if parsed.action is not None:
            await self._act(step, parsed, parsed.action)
        elif parsed.invalid is not None:
            self._invalid(step, parsed, parsed.invalid)
        else:
            self._message(step, parsed)

    async def _ask_model(self) -> Any:
        for attempt in range(2):
            fitted = await self.compactor.fit(
                self, self.messages, harder=attempt > 0, extra_tokens=self._extra_tokens
            )
            if fitted is not self.messages:
                self.messages = fitted
                self._rewrite = True
            try:
                result = await self._guard(self._call_model(self._request(fitted)))
            except (ContextLengthError, ContextTooLargeError) as exc:
                self.compactor.learn_window(str(exc))
                if attempt == 0:
                    self.emit("error", message=str(exc), kind="context_length")
                    continue
                raise _Finish(
                    "failed",
                    error=f"the conversation does not fit the model's context "
                    f"window even after compaction: {exc}",
                ) from None
            except (BackendError, RoutingError) as exc:
                self.emit("error", message=str(exc), kind="backend")
                raise _Finish("failed", error=f"model call failed: {exc}") from None
            self.compactor.observe(fitted, self._extra_tokens, result.usage.prompt_tokens)
            return result
        raise AssertionError("unreachable")

    def _call_model(self, body: dict[str, Any]) -> Awaitable[Any]:
        stream = getattr(self.model, "stream", None)
        if self.spec.stream and stream is not None:
            return stream(body, lambda text: self.emit("model_delta", text=text))
        return self.model.complete(body)

    def _request(self, messages: list[Message]) -> dict[str, Any]:
        spec = self.spec
        body: dict[str, Any] = {
            "model": self._info.model if self._info else spec.model,
            "max_tokens": spec.max_tokens,
        }
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        if self._mode == "native":
            body["messages"] = messages
            body["tools"] = self.tools.native_schemas()
        else:
            body["messages"] = render_for_text_mode(messages)
            if self._mode == "constrained":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "action", "schema": action_schema(self.tools)},
                }
        return body

    # ------------------------------------------------------------ outcomes

    def _assistant_call(self, parsed: ParsedReply, action: Action) -> None:
        self.messages.append(
            {
                "role": "assistant",
                "content": parsed.text or "",
                "tool_calls": [
                    {
                        "id": action.call_id,
                        "type": "function",
                        "function": {
                            "name": action.tool,
                            "arguments": json.dumps(action.args, ensure_ascii=False),
                        },
                    }
                ],
            }
        )

    def _tool_reply(self, action: Action, content: str) -> None:
        self.messages.append(tool_result_message(action.call_id, action.tool, content))

    def _count_invalid(self, problem: str) -> None:
        self._invalid_run += 1
        self._messages_run = 0
        if self._invalid_run >= MAX_INVALID_IN_A_ROW:
            raise _Finish(
                "failed", error=f"{MAX_INVALID_IN_A_ROW} invalid actions in a row; last: {problem}"
            )

    def _invalid(self, step: int, parsed: ParsedReply, invalid: InvalidAction) -> None:
        self.emit("error", message=invalid.message, kind=invalid.kind)
        if invalid.call_id and invalid.source == "native":
            fake = Action(tool=invalid.tool or "unknown", args={}, call_id=invalid.call_id)
            self._assistant_call(parsed, fake)
            self._tool_reply(fake, f"Error: {invalid.message}")
        else:
            self.messages.append({"role": "assistant", "content": parsed.text or ""})
            self.messages.append({"role": "user", "content": f"Error: {invalid.message}"})
        self._record(step, "invalid", tool=invalid.tool, ok=False, output=invalid.message)
        self._count_invalid(invalid.message)

    def _message(self, step: int, parsed: ParsedReply) -> None:
        text = parsed.text.strip()
        self.emit_committed("message", text=text)
        self.messages.append({"role": "assistant", "content": text})
        self._record(step, "message", text=text)
        self._messages_run += 1
        self._invalid_run = 0
        if self._messages_run >= 2:
            raise _Finish("completed", answer=text)
        self.messages.append({"role": "user", "content": NUDGE})

    async def _act(self, step: int, parsed: ParsedReply, action: Action) -> None:
        self._messages_run = 0
        tool = self.tools.get(action.tool)
        self.emit("action", tool=action.tool, args=action.args, call_id=action.call_id)
        self._assistant_call(parsed, action)
        assert tool is not None  # the parser only returns known tools
        try:
            args = tool.validate(action.args)
        except ToolError as exc:
            self._fail_tool(step, action, str(exc))
            self._count_invalid(str(exc))
            return
        self._invalid_run = 0
        verdict = await self._decide(action, args)
        if verdict.decision != "allow":
            self._fail_tool(step, action, f"permission denied: {verdict.reason}")
            if verdict.stop:
                raise _Finish("failed", error=f"stopped by hook: {verdict.reason}")
            return
        args = verdict.args if verdict.args is not None else args
        if action.tool == CONTROL_TOOL:
            await self._complete(step, action, args)
            return
        outcome = await self._guard(self.tools.execute(action.tool, args, self.ctx))
        await self._after_tool(step, action, args, outcome, verdict)

    async def _complete(self, step: int, action: Action, args: dict[str, Any]) -> None:
        answer = str(args.get("answer", ""))
        stop = await self.hooks.stop(self, answer)
        if stop.block:
            self._tool_reply(action, f"Not done yet: {stop.reason}")
            self.emit_committed(
                "tool_result",
                tool=action.tool,
                call_id=action.call_id,
                ok=False,
                output="",
                error=f"stop blocked by hook: {stop.reason}",
            )
            return
        self._tool_reply(action, "Task complete.")
        self.emit_committed(
            "tool_result",
            tool=action.tool,
            call_id=action.call_id,
            ok=True,
            output=answer,
            error=None,
        )
        self._record(step, "action", tool=action.tool, args=args, ok=True, output=answer)
        raise _Finish("completed", answer=answer)

    async def _decide(self, action: Action, args: dict[str, Any]) -> GateResult:
        verdict = await self.gate.check(self, action.tool, args, call_id=action.call_id)
        request_id = None
        if verdict.decision == "ask":
            request_id = f"req_{action.call_id}"[:60]
            self.emit(
                "permission_request",
                request_id=request_id,
                tool=action.tool,
                args=args,
                reason=verdict.reason,
            )
            verdict = await self._guard(self.approver(self, request_id, action.tool, args, verdict))
        extra = {"request_id": request_id} if request_id else {}
        self.emit(
            "permission_decision",
            tool=action.tool,
            decision=verdict.decision,
            by=verdict.by,
            reason=verdict.reason,
            **extra,
        )
        if self.recorder:
            await self.recorder.audit(self, action.tool, args, verdict, request_id)
        if verdict.stop and verdict.decision == "allow":
            raise _Finish("failed", error=f"stopped by hook: {verdict.reason}")
        return verdict

    async def _after_tool(
        self,
        step: int,
        action: Action,
        args: dict[str, Any],
        outcome: ToolOutcome,
        verdict: GateResult,
    ) -> None:
        post = await self.hooks.post_tool(self, action.tool, args, outcome)
        content = outcome.output if outcome.ok else f"Error: {outcome.error}"
        notes = [n for n in (verdict.additional_context, post.additional_context) if n]
        if post.block:
            notes.append(f"Hook feedback: {post.reason}")
        if notes:
            content += "\n\n" + "\n".join(notes)
        self._tool_reply(action, content)
        self.emit_committed(
            "tool_result",
            tool=action.tool,
            call_id=action.call_id,
            ok=outcome.ok,
            output=outcome.output,
            error=outcome.error,
        )
        self._record(
            step,
            "action",
            tool=action.tool,
            args=args,
            ok=outcome.ok,
            output=outcome.output if outcome.ok else outcome.error,
        )
        if post.stop:
            raise _Finish("failed", error=f"stopped by hook: {post.reason}")

    def _fail_tool(self, step: int, action: Action, error: str) -> None:
        self._tool_reply(action, f"Error: {error}")
        self.emit_committed(
            "tool_result",
            tool=action.tool,
            call_id=action.call_id,
            ok=False,
            output="",
            error=error,
        )
        self._record(step, "action", tool=action.tool, args=action.args, ok=False, output=error)

    def _record(self, step: int, kind: str, **fields: Any) -> None:
        if self.recorder:
            self.recorder.add_record(self, step, kind, **fields)
