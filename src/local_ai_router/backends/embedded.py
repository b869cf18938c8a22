"""The embedded default model: a managed llama.cpp server (filled in by the embedded-model work)."""

from __future__ import annotations

from typing import Any

__all__ = ["start_embedded_if_needed"]


async def start_embedded_if_needed(settings: Any, gateway: Any) -> Any:
    """Start the bundled llama.cpp server when configured or when no backend is; else None."""
    return None
