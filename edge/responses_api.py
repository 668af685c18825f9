"""The OpenAI Responses API: ``/v1/responses`` (JSON and typed SSE events), ``/v1/responses/stream``
(the Unified Model Gateway's always-streaming form), and the stored responses' GET, DELETE and
``input_items``.

Each route parses the body into the canonical request (``openai_wire.parse_responses_request``) and
makes the router's ordinary ``Chat`` / ``StreamChat`` call: the same governance as chat completions.
The router keeps the state (ids, stored conversations, per tenant); this module only renders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import Response

from edge.body import read_json
from edge.disconnect import ClientDisconnected, abandoned_response, unless_disconnected
from edge.errors import error_body
from edge.jsonio import dumps
from edge.observability import COST_HEADER, cost_usd, format_usd
from edge.openai_api import (
    ATTEMPTS_HEADER,
    PROVIDER_HEADER,
    ROUTE_HEADER,
    call_metadata,
    error_response,
    ratelimit_headers,
    rpc_error_response,
)
from edge.sse import EventStream, event_frame
from edge.state import EdgeState
from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2
from gateway_common.errors import GatewayError, invalid_argument
from gateway_common.openai_wire import responses_render
from gateway_common.openai_wire.responses_requests import parse_responses_request

router = APIRouter()

_MAX_PAGE = 100


_dumps = dumps


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    """OpenAI ``POST /v1/responses``: the response object, or its typed events when ``stream``."""
    return await _create(request, force_stream=False)


@router.post("/v1/responses/stream")
async def stream_response(request: Request) -> Response:
    """The Unified Model Gateway's ``POST /v1/responses/stream``: the same request, always streamed."""
    return await _create(request, force_stream=True)


async def _create(request: Request, *, force_stream: bool) -> Response:
    state: EdgeState = request.app.state.edge
    try:
        body = await read_json(request, state.config.edge.max_body_bytes)
        canonical, stream = parse_responses_request(body, force_stream=force_stream)
    except GatewayError as error:
        return error_response(error)
    metadata = call_metadata(request)
    if stream:
        return await _stream(request, state, canonical, metadata)
    call = state.router.Chat(router_pb2.ChatRequest(completion=canonical), metadata=metadata)
    try:
        response = await unless_disconnected(request, call, call)
    except ClientDisconnected:
        return abandoned_response()
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    completion = response.completion
    headers = ratelimit_headers(await call.initial_metadata())
    headers[PROVIDER_HEADER] = completion.provider
    if completion.route:
        headers[ROUTE_HEADER] = completion.route
    trailers = await call.trailing_metadata()
    attempts = dict(trailers or ()).get(ATTEMPTS_HEADER)
    if isinstance(attempts, str):
        headers[ATTEMPTS_HEADER] = attempts
    cost = cost_usd(trailers)
    if cost is not None:
        headers[COST_HEADER] = format_usd(cost)
    rendered = responses_render.response_object(canonical, completion.id, completion=completion)
    return Response(_dumps(rendered), media_type="application/json", headers=headers)


async def _stream(
    request: Request,
    state: EdgeState,
    canonical: chat_pb2.ChatCompletionRequest,
    metadata: tuple[tuple[str, str], ...],
) -> Response:
    call = state.router.StreamChat(
        router_pb2.StreamChatRequest(completion=canonical, batch_chunks=True), metadata=metadata
    )
    chunks = aiter(call)
    try:
        first: router_pb2.StreamChatResponse | None = await unless_disconnected(request, call, anext(chunks))
    except StopAsyncIteration:
        first = None
    except ClientDisconnected:
        return abandoned_response()
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    except BaseException:
        call.cancel()
        raise
    headers = ratelimit_headers(await call.initial_metadata())
    if first is not None:
        headers[PROVIDER_HEADER] = first.chunk.provider
        if first.chunk.route:
            headers[ROUTE_HEADER] = first.chunk.route
    renderer = responses_render.StreamRenderer(canonical)

    async def events() -> AsyncIterator[bytes]:
        try:
            for kind, event in renderer.start(first.chunk if first is not None else None):
                yield _sse(kind, event)
            if first is not None:
                # A message may carry the chunks that were ready with its own (more_chunks).
                for chunk in (first.chunk, *first.more_chunks):
                    for kind, event in renderer.feed(chunk):
                        yield _sse(kind, event)
            async for item in chunks:
                for chunk in (item.chunk, *item.more_chunks):
                    for kind, event in renderer.feed(chunk):
                        yield _sse(kind, event)
            for kind, event in renderer.finish():
                yield _sse(kind, event)
        except grpc.aio.AioRpcError as exc:
            # Headers are sent: the failure goes in-band, and the stream ends with response.failed,
            # never response.completed, so no client mistakes it for a complete answer.
            error = error_body(GatewayError.from_rpc_error(exc))["error"]
            for kind, event in renderer.fail(error["message"], error.get("code"), error.get("param")):
                yield _sse(kind, event)
        finally:
            # The client went away (or the stream ended): cancelling travels down to the provider.
            call.cancel()

    return EventStream(events(), headers)


def _sse(kind: str, event: dict[str, Any]) -> bytes:
    return event_frame(kind, dumps(event))


@router.get("/v1/responses/{response_id}")
async def retrieve_response(request: Request, response_id: str) -> Response:
    """OpenAI ``GET /v1/responses/{response_id}``: a stored response of the caller's tenant."""
    state: EdgeState = request.app.state.edge
    try:
        stored = await state.router.GetResponse(
            router_pb2.GetResponseRequest(response_id=response_id), metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    rendered = responses_render.response_object(stored.request, response_id, completion=stored.completion)
    return Response(_dumps(rendered), media_type="application/json")


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> Response:
    """OpenAI ``DELETE /v1/responses/{response_id}``."""
    state: EdgeState = request.app.state.edge
    try:
        await state.router.DeleteResponse(
            router_pb2.DeleteResponseRequest(response_id=response_id), metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    return Response(
        _dumps({"id": response_id, "object": "response.deleted", "deleted": True}), media_type="application/json"
    )


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(request: Request, response_id: str) -> Response:
    """OpenAI ``GET /v1/responses/{response_id}/input_items``: one page of the response's input."""
    state: EdgeState = request.app.state.edge
    try:
        limit, order, after, before = _page(request)
    except GatewayError as error:
        return error_response(error)
    try:
        stored = await state.router.ListResponseInputItems(
            router_pb2.ListResponseInputItemsRequest(response_id=response_id), metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    items = responses_render.input_items(response_id, list(stored.messages))
    page = responses_render.item_list(items, limit=limit, order=order, after=after, before=before)
    return Response(_dumps(page), media_type="application/json")


def _page(request: Request) -> tuple[int, str, str | None, str | None]:
    query = request.query_params
    raw_limit = query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _MAX_PAGE:
        raise invalid_argument(f"Invalid 'limit': expected an integer from 1 to {_MAX_PAGE}.", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_argument("Invalid 'order': expected 'asc' or 'desc'.", "order")
    return int(raw_limit), order, query.get("after"), query.get("before")
