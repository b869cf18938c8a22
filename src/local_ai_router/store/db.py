"""The database handle: an async SQLAlchemy engine plus schema creation.

:meth:`Database.write` runs a whole transaction written against a plain
``Connection`` in one go. On SQLite it runs on a synchronous engine in a
worker thread: one thread hop per transaction instead of one per statement
(aiosqlite's), which is most of an agent step's persistence cost. Elsewhere
(Postgres via asyncpg) it runs on the async engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..types import StoreError
from .schema import metadata

__all__ = ["Database"]

T = TypeVar("T")


class Database:
    """Owns the engine. SQLite by default; any SQLAlchemy async URL works."""

    def __init__(self, url: str):
        self.url = url
        self._engine: AsyncEngine | None = None
        self._sync: Engine | None = None
        self._sync_lock = threading.Lock()  # one writer at a time on the sync engine

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("database not opened; call await db.open() first")
        return self._engine

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    async def open(self) -> Database:
        if self._engine is not None:
            return self
        try:
            url = make_url(self.url)
        except Exception as exc:
            raise StoreError(f"invalid storage.url {self.url!r}: {exc}") from None
        if self.is_sqlite and url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        engine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        except Exception as exc:
            await engine.dispose()
            raise StoreError(f"cannot open database {self.url!r}: {exc}") from None
        self._engine = engine
        if self.is_sqlite and url.database and url.database != ":memory:":
            self._sync = create_engine(
                url.set(drivername="sqlite"),
                connect_args={"timeout": 30, "check_same_thread": False},
            )
            event.listen(self._sync, "connect", _sqlite_pragmas)
        return self

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` as one transaction; committed when it returns."""
        if self._sync is not None:
            return await asyncio.to_thread(self._write_sync, fn)
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    def _write_sync(self, fn: Callable[[Connection], T]) -> T:
        assert self._sync is not None
        with self._sync_lock, self._sync.begin() as conn:
            return fn(conn)

    async def close(self) -> None:
        if self._sync is not None:
            self._sync.dispose()
            self._sync = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets readers (GET /agent/runs) proceed while a run commits its steps;
    # synchronous=NORMAL keeps each commit durable across a process kill.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
