"""API-key checks per scope (chat, agent, admin)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from .keys import ApiKey

__all__ = ["bearer_token", "require_scope"]


def bearer_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


async def require_scope(request: Request, app_state: Any, scope: str) -> ApiKey | None:
    """The caller's key when keys are required; None when the server runs open (loopback only)."""
    if not app_state.settings.server.require_api_key:
        return None
    from .api import ApiError  # local: api imports this module (and not on the open path)

    token = bearer_token(request)
    if not token:
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer <key>' (create one with "
            "'lar keys create NAME')",
            type_="authentication_error",
            code="missing_api_key",
        )
    key = await app_state.keys.verify(token)
    if key is None:
        raise ApiError(
            401,
            "invalid, disabled or expired API key",
            type_="authentication_error",
            code="invalid_api_key",
        )
    if not key.allows(scope):
        raise ApiError(
            403,
            f"this key lacks the {scope!r} scope (it has: {', '.join(key.scopes)})",
            type_="permission_error",
            code="insufficient_scope",
        )
    return key
