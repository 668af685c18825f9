"""The Anthropic Messages façade: ``POST /v1/messages`` (JSON and SSE) and ``/v1/messages/count_tokens``.

Each body is parsed into the one canonical request (``gateway_common.anthropic_wire``) and makes the
same router call as chat completions, so authentication, limits, budgets, routing, fallbacks and
metering apply unchanged and ``model`` resolves to any provider. Only the shapes are Anthropic's:
the ``message`` object, its event stream and its error bodies. The key is read from ``x-api-key``
(what the SDK and Claude Code send) or ``Authorization: Bearer``; ``anthropic-version`` and
``anthropic-beta`` are accepted and do not change the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import Response

from edge.anthropic_errors import anthropic_error_body, anthropic_error_headers, anthropic_status
from edge.body import BodyTooLarge, read_json
from edge.disconnect import ClientDisconnected, abandoned_response, unless_disconnected
from edge.jsonio import dumps
from edge.observability import COST_HEADER, cost_usd, format_usd
from edge.openai_api import ATTEMPTS_HEADER, PROVIDER_HEADER, ROUTE_HEADER, call_metadata, ratelimit_headers
from edge.sse import EventStream, event_frame
from edge.state import EdgeState
from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2
from gateway_common import anthropic_wire
from gateway_common.errors import GatewayError

router = APIRouter()

REQUEST_ID_HEADER = "request-id"
"""Anthropic's name for the request id header; the edge's ``x-request-id`` is sent as well."""

TOKEN_COUNT_HEADER = "x-gateway-token-count"
"""How count_tokens counted: ``ceiling`` (an upper bound, see the README), never a tokenizer's exact count."""


def anthropic_metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """Router metadata with the gateway key from ``x-api-key`` (preferred) or ``Authorization``."""
    metadata = call_metadata(request)
    api_key = request.headers.get("x-api-key")
    if api_key is None:
        return metadata
    # The router reads the key from "authorization" only; x-api-key wins when a client sends both
    # (the SDK sends x-api-key for api_key=, Authorization for auth_token=).
    return (*((k, v) for k, v in metadata if k != "authorization"), ("authorization", f"Bearer {api_key}"))


_dumps = dumps


def _event(data: dict[str, Any]) -> bytes:
    # Anthropic's layout (anthropic_wire.sse_event): the event name is the payload's type.
    return event_frame(data["type"], dumps(data))


def _request_id(request: Request) -> dict[str, str]:
    return {REQUEST_ID_HEADER: request.state.request_id}


def error_response(request: Request, error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """The Anthropic error response for ``error``."""
    status = anthropic_status(error, isinstance(error, BodyTooLarge))
    return Response(
        _dumps(anthropic_error_body(error, status)),
        status_code=status,
        media_type="application/json",
        headers={**(headers or {}), **anthropic_error_headers(error), **_request_id(request)},
    )


def rpc_error_response(request: Request, exc: grpc.aio.AioRpcError) -> Response:
    """The Anthropic error response for a failed router call, with its rate-limit and attempts headers."""
    error = GatewayError.from_rpc_error(exc)
    headers = ratelimit_headers(exc.initial_metadata())
    if error.metadata.get("attempts"):
        headers[ATTEMPTS_HEADER] = error.metadata["attempts"]
    return error_response(request, error, headers)


@router.post("/v1/messages")
async def create_message(request: Request) -> Response:
    """Anthropic ``POST /v1/messages``."""
    state: EdgeState = request.app.state.edge
    try:
        body = await read_json(request, state.config.edge.max_body_bytes)
        completion_request, stream = anthropic_wire.parse_messages_request(body)
    except GatewayError as error:
        return error_response(request, error)
    metadata = anthropic_metadata(request)
    if stream:
        return await _stream_message(request, state, completion_request, metadata)
    call = state.router.Chat(router_pb2.ChatRequest(completion=completion_request), metadata=metadata)
    try:
        response = await unless_disconnected(request, call, call)
    except ClientDisconnected:
        return abandoned_response()
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(request, exc)
    headers = {**ratelimit_headers(await call.initial_metadata()), **_request_id(request)}
    headers[PROVIDER_HEADER] = response.completion.provider
    if response.completion.route:
        headers[ROUTE_HEADER] = response.completion.route
    trailers = await call.trailing_metadata()
    attempts = dict(trailers or ()).get(ATTEMPTS_HEADER)
    if isinstance(attempts, str):
        headers[ATTEMPTS_HEADER] = attempts
    cost = cost_usd(trailers)
    if cost is not None:
        headers[COST_HEADER] = format_usd(cost)
    return Response(
        _dumps(anthropic_wire.message_to_anthropic(response.completion, completion_request.model)),
        media_type="application/json",
        headers=headers,
    )


async def _stream_message(
    request: Request,
    state: EdgeState,
    completion_request: chat_pb2.ChatCompletionRequest,
    metadata: tuple[tuple[str, str], ...],
) -> Response:
    call = state.router.StreamChat(
        router_pb2.StreamChatRequest(completion=completion_request, batch_chunks=True), metadata=metadata
    )
    chunks = aiter(call)
    # The status is committed with the first chunk: a refusal before it (auth, limits, every
    # candidate failed) is an ordinary Anthropic error response the SDK raises as its typed error.
    try:
        first: router_pb2.StreamChatResponse | None = await unless_disconnected(request, call, anext(chunks))
    except StopAsyncIteration:
        first = None
    except ClientDisconnected:
        return abandoned_response()
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(request, exc)
    except BaseException:
        call.cancel()
        raise
    headers = {**ratelimit_headers(await call.initial_metadata()), **_request_id(request)}
    if first is not None:
        headers[PROVIDER_HEADER] = first.chunk.provider
        if first.chunk.route:
            headers[ROUTE_HEADER] = first.chunk.route
    renderer = anthropic_wire.MessageStream(completion_request.model)

    async def events() -> AsyncIterator[bytes]:
        try:
            start = first.chunk if first is not None else chat_pb2.ChatCompletionChunk()
            for event in renderer.start(start):
                yield _event(event)
            if first is not None:
                # A message may carry the chunks that were ready with its own (more_chunks).
                for chunk in (first.chunk, *first.more_chunks):
                    for event in renderer.chunk(chunk):
                        yield _event(event)
            async for item in chunks:
                for chunk in (item.chunk, *item.more_chunks):
                    for event in renderer.chunk(chunk):
                        yield _event(event)
            for event in renderer.finish():
                yield _event(event)
        except grpc.aio.AioRpcError as exc:
            # Headers are sent: the failure goes in-band as an `error` event, and no message_stop
            # follows, so no client mistakes the partial answer for a complete one.
            error = GatewayError.from_rpc_error(exc)
            yield _event(anthropic_error_body(error, anthropic_status(error)))
        finally:
            # The client went away (or the stream ended): cancelling travels down to the upstream.
            call.cancel()

    return EventStream(events(), {**headers, "cache-control": "no-cache"})


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    """Anthropic ``POST /v1/messages/count_tokens``: the gateway's ceiling count, using no quota."""
    state: EdgeState = request.app.state.edge
    try:
        body = await read_json(request, state.config.edge.max_body_bytes)
        completion_request = anthropic_wire.parse_count_tokens_request(body)
    except GatewayError as error:
        return error_response(request, error)
    call = state.router.CountTokens(
        router_pb2.CountTokensRequest(completion=completion_request), metadata=anthropic_metadata(request)
    )
    try:
        response = await unless_disconnected(request, call, call)
    except ClientDisconnected:
        return abandoned_response()
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(request, exc)
    method = router_pb2.TokenCountMethod.Name(response.method).removeprefix("TOKEN_COUNT_METHOD_").lower()
    return Response(
        _dumps({"input_tokens": response.input_tokens}),
        media_type="application/json",
        headers={**_request_id(request), TOKEN_COUNT_HEADER: method},
    )
