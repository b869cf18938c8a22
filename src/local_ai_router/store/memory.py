"""Opt-in conversation memory of the gateway: conversations and their turns."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import delete, func, select, update

from .db import Database
from .schema import conversations, memory_messages

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self, db: Database):
        self.db = db

    async def ensure_conversation(
        self, user_id: str, conversation_id: str | None, title: str
    ) -> str:
        """The conversation's id, created when absent; refuses another user's conversation."""
        now = time.time()
        async with self.db.engine.begin() as conn:
            if conversation_id:
                row = (
                    await conn.execute(
                        select(conversations.c.user_id).where(conversations.c.id == conversation_id)
                    )
                ).first()
                if row is not None:
                    if row.user_id != user_id:
                        raise PermissionError("conversation belongs to another user")
                    return conversation_id
            cid = conversation_id or uuid.uuid4().hex
            await conn.execute(
                conversations.insert().values(
                    id=cid, user_id=user_id, title=title[:200], created_at=now, updated_at=now
                )
            )
        return cid

    async def add_turn(
        self, conversation_id: str, user_text: str, reply: str, model: str | None
    ) -> None:
        now = time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(
                memory_messages.insert(),
                [
                    {
                        "conversation_id": conversation_id,
                        "role": "user",
                        "content": user_text,
                        "model": None,
                        "created_at": now,
                    },
                    {
                        "conversation_id": conversation_id,
                        "role": "assistant",
                        "content": reply,
                        "model": model,
                        "created_at": now,
                    },
                ],
            )
            await conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(updated_at=now)
            )

    async def list(self, user_id: str | None, limit: int = 100) -> list[dict[str, Any]]:
        count = (
            select(func.count())
            .select_from(memory_messages)
            .where(memory_messages.c.conversation_id == conversations.c.id)
            .scalar_subquery()
        )
        q = select(conversations, count.label("message_count")).order_by(
            conversations.c.updated_at.desc()
        )
        if user_id:
            q = q.where(conversations.c.user_id == user_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q.limit(limit))).all()
        return [dict(r._mapping) for r in rows]

    async def get(self, conversation_id: str, user_id: str | None) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            conv = (
                await conn.execute(
                    select(conversations).where(conversations.c.id == conversation_id)
                )
            ).first()
            if conv is None or (user_id and conv.user_id != user_id):
                return None
            msgs = (
                await conn.execute(
                    select(memory_messages)
                    .where(memory_messages.c.conversation_id == conversation_id)
                    .order_by(memory_messages.c.id)
                )
            ).all()
        out = dict(conv._mapping)
        out["messages"] = [
            {"role": m.role, "content": m.content, "model": m.model, "created_at": m.created_at}
            for m in msgs
        ]
        return out

    async def delete(self, conversation_id: str, user_id: str | None) -> bool:
        if await self.get(conversation_id, user_id) is None:
            return False
        async with self.db.engine.begin() as conn:
            await conn.execute(
                delete(memory_messages).where(memory_messages.c.conversation_id == conversation_id)
            )
            await conn.execute(delete(conversations).where(conversations.c.id == conversation_id))
        return True

    async def search(
        self, query: str, user_id: str | None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Messages containing every word of the query (case-insensitive), newest first."""
        words = [w for w in query.lower().split() if w][:8]
        q = select(memory_messages, conversations.c.user_id, conversations.c.title).join(
            conversations, conversations.c.id == memory_messages.c.conversation_id
        )
        for w in words:
            q = q.where(func.lower(memory_messages.c.content).contains(w, autoescape=True))
        if user_id:
            q = q.where(conversations.c.user_id == user_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(memory_messages.c.id.desc()).limit(limit))).all()
        return [
            {
                "conversation_id": r.conversation_id,
                "title": r.title,
                "role": r.role,
                "content": r.content,
                "created_at": r.created_at,
            }
            for r in rows
        ]
