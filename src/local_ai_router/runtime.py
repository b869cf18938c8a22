"""Everything one process runs: database, gateway, embedded model, agent service.

``lar serve`` (via the app's lifespan) and in-process ``lar run`` build the same
:class:`Runtime`, so a CLI run gets the same routing, storage and permissions as
a run over HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .agent.policy_setup import validate_agent_config
from .agent.runner import AgentService
from .backends.base import Backend
from .config import Settings
from .gateway.keys import KeyStore
from .gateway.service import Gateway
from .store.agent_store import AgentStore
from .store.db import Database
from .store.memory import MemoryStore

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    gateway: Gateway
    keys: KeyStore
    memory: MemoryStore
    agent_store: AgentStore
    agent: AgentService
    manage_embedded: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
    _embedded: Any = None

    @classmethod
    def create(cls, settings: Settings, *, backends: Sequence[Backend] | None = None) -> Runtime:
        """Build without I/O; :meth:`start` opens and starts things."""
        db = Database(settings.storage.url)
        gateway = Gateway(settings, db, backends=backends)
        agent_store = AgentStore(db)
        return cls(
            settings=settings,
            db=db,
            gateway=gateway,
            keys=KeyStore(db),
            memory=MemoryStore(db),
            agent_store=agent_store,
            agent=AgentService(settings, gateway, agent_store),
            manage_embedded=backends is None,
        )

    async def start(self) -> None:
        validate_agent_config(self.settings.agent)  # bad rules or hooks fail here, not mid-run
        await self.db.open()
        if self.manage_embedded:
            from .backends.embedded import start_embedded_if_needed

            self._embedded = await start_embedded_if_needed(self.settings, self.gateway)
        await self.gateway.start()
        await self.agent.start()

    async def stop(self) -> None:
        try:
            await self.agent.stop()
            await self.gateway.stop()
        finally:
            if self._embedded is not None:
                await self._embedded.stop()
                self._embedded = None
            await self.db.close()
