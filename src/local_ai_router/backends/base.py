"""The Backend protocol: what the router and the agent need from a model server.

A backend receives everything on every call (messages, tools, settings) and
keeps no conversation state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..config import BackendConfig
from ..types import ChatResult

if TYPE_CHECKING:
    from .openai_compat import UpstreamStream
    from .profiles import Profile

__all__ = ["Backend", "create_backend"]


@runtime_checkable
class Backend(Protocol):
    name: str
    config: BackendConfig
    profile: Profile
    base_url: str

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def complete(self, body: dict[str, Any]) -> ChatResult: ...
    async def open_stream(self, body: dict[str, Any]) -> UpstreamStream: ...
    async def models(self) -> list[dict[str, Any]]: ...
    async def health(self, timeout: float) -> bool: ...
    async def discover_context_window(self, model: str) -> int | None: ...
    async def aclose(self) -> None: ...


def create_backend(config: BackendConfig, **kwargs: Any) -> Backend:
    """The adapter for a configured backend."""
    if config.kind == "anthropic":
        from .anthropic import AnthropicBackend

        return AnthropicBackend(config, **kwargs)
    from .openai_compat import OpenAICompatBackend

    return OpenAICompatBackend(config, **kwargs)
