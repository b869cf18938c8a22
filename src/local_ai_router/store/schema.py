"""Tables, in SQLAlchemy Core. Nothing outside ``store/`` knows the dialect."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "api_keys",
    "audit",
    "conversations",
    "memory_messages",
    "metadata",
    "request_log",
    "runs",
    "session_messages",
    "sessions",
    "steps",
]

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("last_used_at", Float),
)

request_log = Table(
    "request_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("key_id", String(32)),
    Column("endpoint", String(64), nullable=False),
    Column("model_requested", String(200)),
    Column("model_used", String(200)),
    Column("backend", String(100)),
    Column("stream", Boolean, nullable=False, default=False),
    Column("status", Integer, nullable=False),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("duration_ms", Float, nullable=False),
    Column("error", Text),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(200), nullable=False, index=True),
    Column("title", String(200)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

memory_messages = Table(
    "memory_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "conversation_id",
        String(64),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("role", String(32), nullable=False),
    Column("content", Text, nullable=False),
    Column("model", String(200)),
    Column("created_at", Float, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workspace", Text, nullable=False),
    Column("title", String(300)),
    Column("parent_session_id", String(64)),
    Column("kind", String(16), nullable=False, default="main"),  # main / fork / child
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

session_messages = Table(
    "session_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("run_id", String(64)),
    Column("message", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_session_messages_session_seq", "session_id", "seq", unique=True),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("session_id", String(64), nullable=False, index=True),
    Column("parent_run_id", String(64), index=True),
    Column("task", Text, nullable=False),
    Column("model", String(200)),
    Column("workspace", Text),
    Column("status", String(32), nullable=False),
    Column("final_answer", Text),
    Column("steps", Integer, nullable=False, default=0),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
)

steps = Table(
    "steps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("tool", String(200)),
    Column("args", JSON),
    Column("ok", Boolean),
    Column("output", Text),
    Column("text", Text),
    Column("created_at", Float, nullable=False),
    Index("ix_steps_run_step", "run_id", "step"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), index=True),
    Column("session_id", String(64)),
    Column("tool", String(200), nullable=False),
    Column("args", JSON),
    Column("decision", String(16), nullable=False),
    Column("by", String(16), nullable=False),
    Column("reason", Text),
    Column("request_id", String(64)),
    Column("created_at", Float, nullable=False),
)
