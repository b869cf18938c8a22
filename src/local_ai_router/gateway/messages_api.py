"""``POST /v1/messages``: the Anthropic Messages API in front of the same routing.

Point an Anthropic client at the gateway (Claude Code:
``ANTHROPIC_BASE_URL=http://127.0.0.1:8012``, with ``ANTHROPIC_MODEL`` naming an
alias such as ``big``, or ``aliases`` mapping Claude model names to local ones)
and its requests are translated (:mod:`.anthropic_wire`), routed exactly like
``/v1/chat/completions`` (aliases, ``auto``, ``X-Backend``, fallback, queue,
keys with the ``chat`` scope, sent as ``x-api-key``), and answered in
Anthropic's shapes, streams included. Errors use Anthropic's error body.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..types import BackendError, RoutingError
from .anthropic_wire import (
    AnthropicRequestError,
    StreamTranslator,
    error_body,
    message_from_openai,
    openai_request,
)
from .api import ApiError, backend_error, parse_json, read_body, routing_error
from .auth import require_scope
from .chat_api import route_headers, routing_headers
from .routing import estimate_tokens
from .service import Gateway, StreamSession

__all__ = ["build_messages_router"]

ENDPOINT = "messages"  # the request log's and metrics' endpoint label


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.message), exc.status, headers=exc.headers)


class MessagesEndpoint:
    def __init__(self, gateway: Gateway, app_state: Any):
        self.gateway = gateway
        self.app_state = app_state
        self.max_body = gateway.settings.server.max_body_bytes

    async def read(self, request: Request, *, counting: bool = False) -> dict[str, Any]:
        raw = await read_body(
            request.stream(), request.headers.get("content-length"), self.max_body
        )
        data = parse_json(raw)
        if counting and isinstance(data, dict):
            data = {**data, "max_tokens": 1}  # count_tokens bodies carry none
        try:
            return openai_request(data)
        except AnthropicRequestError as exc:
            raise ApiError(400, f"invalid request: {exc}", code="invalid_request") from None

    async def messages(self, request: Request) -> Response:
        started = time.perf_counter()
        key_id = None
        try:
            key = await require_scope(request, self.app_state, "chat")
            key_id = key.id if key else None
            body = await self.read(request)
        except ApiError as exc:
            if key_id is not None or not self.app_state.settings.server.require_api_key:
                self._account(None, exc.status, {}, started, key_id, None, False, exc.message)
            return _error(exc)
        requested = str(body["model"])
        if body.get("stream"):
            return await self._stream(request, body, started, key_id, requested)
        try:
            data, attempt = await self.gateway.chat(body, routing_headers(request.headers))
        except (RoutingError, BackendError) as exc:
            return self._failed(exc, started, key_id, requested, False)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        self._account(attempt, 200, usage, started, key_id, requested, False, None)
        return JSONResponse(message_from_openai(data, requested), headers=route_headers(attempt))

    async def count_tokens(self, request: Request) -> Response:
        try:
            await require_scope(request, self.app_state, "chat")
            body = await self.read(request, counting=True)
        except ApiError as exc:
            return _error(exc)
        return JSONResponse({"input_tokens": estimate_tokens(body)})

    async def _stream(
        self, request: Request, body: dict[str, Any], started: float, key_id: str | None, model: str
    ) -> Response:
        try:
            session = await self.gateway.open_stream(body, routing_headers(request.headers))
        except (RoutingError, BackendError) as exc:
            return self._failed(exc, started, key_id, model, True)
        headers = {**route_headers(session.attempt), "Cache-Control": "no-cache"}
        return StreamingResponse(
            self._relay(session, StreamTranslator(model), started, key_id, model),
            media_type="text/event-stream",
            headers=headers,
        )

    async def _relay(
        self,
        session: StreamSession,
        out: StreamTranslator,
        started: float,
        key_id: str | None,
        model: str,
    ) -> AsyncIterator[bytes]:
        status, error, finished = 200, None, False
        try:
            yield out.start() + out.feed(session.first)
            while True:
                try:
                    payload = await session.events.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:  # bytes already went out: end with an error event
                    status, error = 502, f"upstream_error: stream interrupted: {exc}"
                    yield out.fail(f"upstream stream failed mid-way: {exc}")
                    break
                events = out.feed(payload)
                if events:
                    yield events
            if status == 200:
                finished = True
                yield out.finish()
        finally:
            if not finished and error is None:
                status, error = 499, "client_closed: the client left before the stream ended"
            await self.gateway.close_stream(session)
            usage = {
                "prompt_tokens": out.usage["input_tokens"] or None,
                "completion_tokens": out.usage["output_tokens"] or None,
            }
            self._account(session.attempt, status, usage, started, key_id, model, True, error)

    def _failed(
        self,
        exc: RoutingError | BackendError,
        started: float,
        key_id: str | None,
        model: str,
        stream: bool,
    ) -> JSONResponse:
        err = routing_error(exc) if isinstance(exc, RoutingError) else backend_error(exc)
        message = f"{err.code}: {err.message}"
        self._account(None, err.status, {}, started, key_id, model, stream, message)
        return _error(err)

    def _account(
        self,
        attempt: Any,
        status: int,
        usage: Mapping[str, Any],
        started: float,
        key_id: str | None,
        model: str | None,
        stream: bool,
        error: str | None,
    ) -> None:
        self.gateway.account(
            attempt,
            ENDPOINT,
            status,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            time.perf_counter() - started,
            model_requested=model,
            key_id=key_id,
            stream=stream,
            error=error,
        )


def build_messages_router(gateway: Gateway, app_state: Any) -> APIRouter:
    endpoint = MessagesEndpoint(gateway, app_state)
    r = APIRouter()
    r.add_api_route("/v1/messages", endpoint.messages, methods=["POST"])
    r.add_api_route("/v1/messages/count_tokens", endpoint.count_tokens, methods=["POST"])
    return r
