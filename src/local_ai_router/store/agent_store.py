"""Sessions, their messages, runs, steps and permission audit rows.

Each agent step is committed in one transaction (its messages, its step rows
and the run's counters), so killing the process at any moment loses no
completed step.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from ..types import Message
from .db import Database
from .schema import audit, runs, session_messages, sessions, steps

__all__ = ["AgentStore", "StepRecord", "new_id"]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


@dataclass(slots=True)
class StepRecord:
    step: int
    kind: str  # action / message / invalid / error
    tool: str | None = None
    args: dict[str, Any] | None = None
    ok: bool | None = None
    output: str | None = None
    text: str | None = None


class AgentStore:
    def __init__(self, db: Database):
        self.db = db

    # ------------------------------------------------------------ sessions

    async def create_session(
        self, workspace: str, title: str, parent: str | None = None, kind: str = "main"
    ) -> str:
        sid = new_id("ses")
        now = time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(
                insert(sessions).values(
                    id=sid,
                    workspace=workspace,
                    title=title[:300],
                    parent_session_id=parent,
                    kind=kind,
                    created_at=now,
                    updated_at=now,
                )
            )
        return sid

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).first()
        return dict(row._mapping) if row else None

    async def latest_session(self, workspace: str) -> str | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(sessions.c.id)
                    .where(sessions.c.workspace == workspace)
                    .where(sessions.c.kind != "child")
                    .order_by(sessions.c.updated_at.desc())
                    .limit(1)
                )
            ).first()
        return row.id if row else None

    async def list_sessions(
        self, limit: int = 50, workspace: str | None = None
    ) -> list[dict[str, Any]]:
        count = (
            select(func.count())
            .select_from(session_messages)
            .where(session_messages.c.session_id == sessions.c.id)
            .scalar_subquery()
        )
        q = select(sessions, count.label("message_count")).order_by(sessions.c.updated_at.desc())
        if workspace:
            q = q.where(sessions.c.workspace == workspace)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q.limit(limit))).all()
        return [dict(r._mapping) for r in rows]

    async def messages(self, session_id: str) -> list[Message]:
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(session_messages.c.message)
                    .where(session_messages.c.session_id == session_id)
                    .order_by(session_messages.c.seq)
                )
            ).all()
        return [r.message for r in rows]

    async def replace_messages(self, session_id: str, messages: list[Message]) -> None:
        """Rewrite a session's conversation (after a manual compaction)."""
        now = time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(
                delete(session_messages).where(session_messages.c.session_id == session_id)
            )
            if messages:
                await conn.execute(
                    insert(session_messages),
                    [
                        {
                            "session_id": session_id,
                            "seq": i,
                            "run_id": None,
                            "message": m,
                            "created_at": now,
                        }
                        for i, m in enumerate(messages)
                    ],
                )
            await conn.execute(
                update(sessions).where(sessions.c.id == session_id).values(updated_at=now)
            )

    async def fork_session(self, session_id: str) -> str:
        src = await self.get_session(session_id)
        if src is None:
            raise KeyError(session_id)
        new = await self.create_session(
            src["workspace"],
            f"fork of {src.get('title') or session_id}",
            parent=session_id,
            kind="fork",
        )
        await self.replace_messages(new, await self.messages(session_id))
        return new

    async def delete_session(self, session_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            run_ids = [
                r.id
                for r in (
                    await conn.execute(select(runs.c.id).where(runs.c.session_id == session_id))
                ).all()
            ]
            if run_ids:
                await conn.execute(delete(steps).where(steps.c.run_id.in_(run_ids)))
                await conn.execute(delete(audit).where(audit.c.run_id.in_(run_ids)))
                await conn.execute(delete(runs).where(runs.c.id.in_(run_ids)))
            await conn.execute(
                delete(session_messages).where(session_messages.c.session_id == session_id)
            )
            result = await conn.execute(delete(sessions).where(sessions.c.id == session_id))
        return bool(result.rowcount)

    # ------------------------------------------------------------ runs

    async def create_run(
        self,
        *,
        run_id: str,
        session_id: str,
        task: str,
        model: str,
        workspace: str,
        parent_run_id: str | None = None,
    ) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(
                insert(runs).values(
                    id=run_id,
                    session_id=session_id,
                    parent_run_id=parent_run_id,
                    task=task,
                    model=model,
                    workspace=workspace,
                    status="running",
                    steps=0,
                    prompt_tokens=0,
                    completion_tokens=0,
                    created_at=time.time(),
                )
            )

    async def commit_step(
        self,
        *,
        run_id: str,
        session_id: str,
        first_seq: int,
        new_messages: list[Message],
        records: list[StepRecord],
        step: int,
        usage: tuple[int, int],
        replace_all: bool = False,
        audits: list[dict[str, Any]] | None = None,
    ) -> None:
        """One transaction: the step's messages, its records and audit rows, the run's counters.

        ``replace_all``: ``new_messages`` is the whole conversation (after a compaction).
        """
        now = time.time()
        message_rows = [
            {
                "session_id": session_id,
                "seq": first_seq + i,
                "run_id": run_id,
                "message": m,
                "created_at": now,
            }
            for i, m in enumerate(new_messages)
        ]
        step_rows = [
            {
                "run_id": run_id,
                "step": r.step,
                "kind": r.kind,
                "tool": r.tool,
                "args": r.args,
                "ok": r.ok,
                "output": r.output,
                "text": r.text,
                "created_at": now,
            }
            for r in records
        ]

        def tx(conn: Connection) -> None:
            if replace_all:
                conn.execute(
                    delete(session_messages).where(session_messages.c.session_id == session_id)
                )
            if message_rows:
                conn.execute(insert(session_messages), message_rows)
            if audits:
                conn.execute(insert(audit), audits)
            if step_rows:
                conn.execute(insert(steps), step_rows)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(steps=step, prompt_tokens=usage[0], completion_tokens=usage[1])
            )
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(updated_at=now))

        await self.db.write(tx)

    async def finish_run(
        self, run_id: str, status: str, final_answer: str | None, error: str | None
    ) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status=status, final_answer=final_answer, error=error, finished_at=time.time()
                )
            )

    async def get_run(self, run_id: str, *, with_steps: bool = True) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == run_id))).first()
            if row is None:
                return None
            out = dict(row._mapping)
            if with_steps:
                rows = (
                    await conn.execute(
                        select(steps).where(steps.c.run_id == run_id).order_by(steps.c.id)
                    )
                ).all()
                out["steps"] = [
                    {k: v for k, v in dict(r._mapping).items() if k not in ("id", "run_id")}
                    for r in rows
                ]
                children = (
                    await conn.execute(
                        select(runs.c.id, runs.c.status).where(runs.c.parent_run_id == run_id)
                    )
                ).all()
                out["children"] = [{"run_id": c.id, "status": c.status} for c in children]
        return out

    async def list_runs(
        self, limit: int = 50, session_id: str | None = None
    ) -> list[dict[str, Any]]:
        q = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
        if session_id:
            q = q.where(runs.c.session_id == session_id)
        async with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(q)).all()]

    async def session_runs(self, session_id: str) -> list[dict[str, Any]]:
        q = (
            select(runs.c.id, runs.c.task, runs.c.status, runs.c.created_at, runs.c.parent_run_id)
            .where(runs.c.session_id == session_id)
            .order_by(runs.c.created_at)
        )
        async with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(q)).all()]

    async def mark_interrupted_runs(self) -> int:
        """Runs left 'running' by a crash are 'interrupted' after a restart."""
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                update(runs)
                .where(runs.c.status == "running")
                .values(
                    status="interrupted",
                    finished_at=time.time(),
                    error="the server stopped during the run",
                )
            )
        return result.rowcount or 0

    # ------------------------------------------------------------ audit

    async def add_audit(
        self,
        *,
        run_id: str,
        session_id: str,
        tool: str,
        args: dict[str, Any],
        decision: str,
        by: str,
        reason: str,
        request_id: str | None,
    ) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(
                insert(audit).values(
                    run_id=run_id,
                    session_id=session_id,
                    tool=tool,
                    args=args,
                    decision=decision,
                    by=by,
                    reason=reason,
                    request_id=request_id,
                    created_at=time.time(),
                )
            )

    async def audit_rows(self, run_id: str) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(audit).where(audit.c.run_id == run_id).order_by(audit.c.id)
                )
            ).all()
        return [dict(r._mapping) for r in rows]
