"""API keys: stored as SHA-256 hashes, with scopes and expiry.

Keys are 32 random bytes, so a fast hash is enough (nothing to brute-force);
the plaintext is shown once, at creation. Verified keys are cached briefly so
the hot path does not hit the database on every request; disabling a key takes
effect within ``cache_ttl_s``, and ``last_used_at`` is recorded at that granularity.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import delete, select, update

from ..store.db import Database
from ..store.schema import api_keys

__all__ = ["SCOPES", "ApiKey", "KeyStore", "hash_key"]

SCOPES = ("chat", "agent", "admin")
KEY_PREFIX = "lar-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    disabled: bool
    last_used_at: float | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "disabled": self.disabled,
            "last_used_at": self.last_used_at,
        }


def _row(r: Any) -> ApiKey:
    return ApiKey(
        id=r.id,
        name=r.name,
        prefix=r.prefix,
        scopes=tuple(r.scopes or ()),
        created_at=r.created_at,
        expires_at=r.expires_at,
        disabled=bool(r.disabled),
        last_used_at=r.last_used_at,
    )


class KeyStore:
    def __init__(self, db: Database, *, cache_ttl_s: float = 5.0):
        self.db = db
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def create(
        self,
        name: str,
        scopes: list[str] | tuple[str, ...] = ("chat",),
        *,
        expires_in_s: float | None = None,
    ) -> tuple[ApiKey, str]:
        bad = [s for s in scopes if s not in SCOPES]
        if bad:
            raise ValueError(f"unknown scope(s) {', '.join(bad)}; choose from {', '.join(SCOPES)}")
        if not scopes:
            raise ValueError("a key needs at least one scope")
        if expires_in_s is not None and expires_in_s <= 0:
            raise ValueError("expiry must be in the future (a positive duration)")
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        key = ApiKey(
            id=uuid.uuid4().hex[:12],
            name=name,
            prefix=plaintext[:10],
            scopes=tuple(scopes),
            created_at=now,
            expires_at=now + expires_in_s if expires_in_s is not None else None,
            disabled=False,
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=key.id,
                    name=key.name,
                    key_hash=hash_key(plaintext),
                    prefix=key.prefix,
                    scopes=list(key.scopes),
                    created_at=key.created_at,
                    expires_at=key.expires_at,
                    disabled=False,
                )
            )
        return key, plaintext

    async def list(self) -> list[ApiKey]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
        return [_row(r) for r in rows]

    async def find(self, ident: str) -> ApiKey | None:
        """By id, or by the key's visible prefix."""
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys).where((api_keys.c.id == ident) | (api_keys.c.prefix == ident))
                )
            ).first()
        return _row(row) if row else None

    async def set_disabled(self, ident: str, disabled: bool) -> bool:
        key = await self.find(ident)
        if key is None:
            return False
        async with self.db.engine.begin() as conn:
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key.id).values(disabled=disabled)
            )
        self._cache.clear()
        return True

    async def delete(self, ident: str) -> bool:
        key = await self.find(ident)
        if key is None:
            return False
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(api_keys).where(api_keys.c.id == key.id))
        self._cache.clear()
        return True

    async def count_active(self) -> int:
        return sum(1 for k in await self.list() if not k.disabled and not k.expired())

    async def verify(self, plaintext: str) -> ApiKey | None:
        """The key if it exists, is enabled and has not expired."""
        now = time.monotonic()
        digest = hash_key(plaintext)
        hit = self._cache.get(digest)
        if hit and now - hit[0] < self.cache_ttl_s:
            key = hit[1]
        else:
            async with self.db.engine.connect() as conn:
                row = (
                    await conn.execute(select(api_keys).where(api_keys.c.key_hash == digest))
                ).first()
            key = _row(row) if row else None
            if key is not None and not key.disabled and not key.expired():
                key = await self._touch(key)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, key)
        if key is None or key.disabled or key.expired():
            return None
        return key

    async def _touch(self, key: ApiKey) -> ApiKey:
        """Record a use. Runs on cache misses only, so ``last_used_at`` is exact to within
        ``cache_ttl_s`` and the hot path stays free of writes."""
        used = time.time()
        async with self.db.engine.begin() as conn:
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key.id).values(last_used_at=used)
            )
        return replace(key, last_used_at=used)
