"""The OpenAI-compatible façade: ``/v1/chat/completions`` (JSON and SSE), ``/v1/embeddings``, ``/v1/models``.

Each route parses the OpenAI JSON into the canonical protobuf request, makes one gRPC call to the
router with the caller's key and request id as metadata, and writes the answer in OpenAI's exact
shapes. A stream's HTTP status is committed only when its first chunk is ready, so an error before
that is a normal JSON error response; an error after it is an in-band SSE error event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import Response

from edge.body import BodyTooLarge, read_json
from edge.client_ip import CLIENT_IP_KEY, client_ip
from edge.disconnect import ClientDisconnected, abandoned_response, unless_disconnected
from edge.errors import error_body, error_headers, http_status
from edge.jsonio import dumps
from edge.observability import COST_HEADER, cost_usd, format_usd, window_headers
from edge.sse import EventStream, data_frame
from edge.state import EdgeState
from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2
from gateway_common import openai_wire
from gateway_common.errors import GatewayError, Reason

router = APIRouter()

# Credentials always; trace context only when the instrumentation does not inject its own.
# X-Upstream-Authorization is the client's own upstream key (bring-your-own-key); the gateway key
# stays in Authorization.
_CREDENTIAL_HEADERS = (b"authorization", b"x-upstream-authorization")
_TRACE_HEADERS = (b"traceparent", b"tracestate")
_FORWARDED = frozenset(_CREDENTIAL_HEADERS + _TRACE_HEADERS)

# Which provider served the answer ("<name> (stub)" for a provider in stub mode).
PROVIDER_HEADER = "x-gateway-provider"
# Which deployment answered and the strategy that chose it: "<provider:model>; strategy=<name>".
ROUTE_HEADER = "x-gateway-route"

ATTEMPTS_HEADER = "x-gateway-attempts"
"""The router's attempts (``<deployment>: <result>``, "; "-separated) when there was more than one."""


_dumps = dumps


def call_metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for the router: the caller's credentials, request id, address and trace context."""
    metadata = [("x-request-id", request.state.request_id)]
    state: EdgeState = request.app.state.edge
    address = client_ip(request, state.trusted_proxies)
    if address:
        metadata.append((CLIENT_IP_KEY, address))
    # One pass over the raw headers; the first of a repeated header wins, as Headers.get would pick.
    found: dict[bytes, bytes] = {}
    for name, value in request.scope["headers"]:
        if name in _FORWARDED and name not in found:
            found[name] = value
    # With tracing on, the instrumentation continues the client's trace and injects its own context.
    for name in _CREDENTIAL_HEADERS if state.tracing else _CREDENTIAL_HEADERS + _TRACE_HEADERS:
        raw = found.get(name)
        if raw is not None:
            metadata.append((name.decode(), raw.decode("latin-1")))
    return tuple(metadata)


_FORWARDED_PREFIXES = ("x-ratelimit-", "x-gateway-max-tokens-capped")


def ratelimit_headers(metadata: Any) -> dict[str, str]:
    """The router's ``x-ratelimit-*`` metadata, and the max_tokens cap it applied, as HTTP headers,
    with the request window also under AI Gateway's names (``X-RateLimit-Remaining``, ``-Reset-Ms``)."""
    headers = {k: v for k, v in (metadata or ()) if isinstance(v, str) and k.startswith(_FORWARDED_PREFIXES)}
    return {**headers, **window_headers(headers)}


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """The OpenAI error response for ``error``."""
    status = 413 if isinstance(error, BodyTooLarge) else http_status(error)
    return Response(
        _dumps(error_body(error)),
        status_code=status,
        media_type="application/json",
        headers={**(headers or {}), **error_headers(error)},
    )


def rpc_error_response(exc: grpc.aio.AioRpcError) -> Response:
    """The OpenAI error response for a failed router call, with its rate-limit and attempts headers."""
    error = GatewayError.from_rpc_error(exc)
    headers = ratelimit_headers(exc.initial_metadata())
    if error.metadata.get("attempts"):
        headers[ATTEMPTS_HEADER] = error.metadata["attempts"]
    return error_response(error, headers)


@router.post("/v1/chat/completions")
# Unified Model Gateway documents its OpenAI façade under this name; same handler, same behaviour.
@router.post("/v1/chat.completions", include_in_schema=False)
async def create_chat_completion(request: Request) -> Response:
    """OpenAI ``POST /v1/chat/completions``."""
    state: EdgeState = request.app.state.edge
    try:
        body = await read_json(request, state.config.edge.max_body_bytes)
        completion_request, stream = openai_wire.parse_chat_request(body)
    except GatewayError as error:
        return error_response(error)
    metadata = call_metadata(request)
    if not stream:
        call = state.router.Chat(router_pb2.ChatRequest(completion=completion_request), metadata=metadata)
        try:
            response = await unless_disconnected(request, call, call)
        except ClientDisconnected:
            return abandoned_response()
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc)
        headers = ratelimit_headers(await call.initial_metadata())
        headers[PROVIDER_HEADER] = response.completion.provider
        if response.completion.route:
            headers[ROUTE_HEADER] = response.completion.route
        trailers = await call.trailing_metadata()
        attempts = dict(trailers or ()).get(ATTEMPTS_HEADER)
        if isinstance(attempts, str):
            # The router lists the attempts of an answer that needed more than one.
            headers[ATTEMPTS_HEADER] = attempts
        cost = cost_usd(trailers)
        if cost is not None:
            headers[COST_HEADER] = format_usd(cost)
        return Response(
            _dumps(openai_wire.completion_to_openai(response.completion)),
            media_type="application/json",
            headers=headers,
        )
    return await _stream_chat(request, state, completion_request, metadata)


async def _stream_chat(
    request: Request,
    state: EdgeState,
    completion_request: chat_pb2.ChatCompletionRequest,
    metadata: tuple[tuple[str, str], ...],
) -> Response:
    include_usage = completion_request.stream_options.include_usage
    call = state.router.StreamChat(
        router_pb2.StreamChatRequest(completion=completion_request, batch_chunks=True), metadata=metadata
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

    async def events() -> AsyncIterator[bytes]:
        # The usage chunk is held back until the call ends: the cost it carries (usage.cost_usd,
        # a gateway extension) arrives in the router's trailers, after the last chunk.
        usage_chunk: chat_pb2.ChatCompletionChunk | None = None

        def frames(item: router_pb2.StreamChatResponse) -> bytes:
            # The chunks of one message (more_chunks: those that were ready together) leave in one write.
            nonlocal usage_chunk
            out = []
            for chunk in (item.chunk, *item.more_chunks):
                if include_usage and chunk.HasField("usage") and not chunk.choices:
                    usage_chunk = chunk
                    continue
                data = _chunk_json(chunk, include_usage)
                if data is not None:
                    out.append(data_frame(data))
            return b"".join(out)

        try:
            if first is not None:
                data = frames(first)
                if data:
                    yield data
            async for item in chunks:
                data = frames(item)
                if data:
                    yield data
            if usage_chunk is not None:
                payload = openai_wire.chunk_to_openai(usage_chunk, include_usage)
                trailers = await call.trailing_metadata()
                cost = cost_usd(trailers)
                if cost is not None and isinstance(payload.get("usage"), dict):
                    payload["usage"]["cost_usd"] = cost
                attempts = dict(trailers or ()).get(ATTEMPTS_HEADER)
                if isinstance(attempts, str) and isinstance(payload.get("usage"), dict):
                    # A gateway extension, like cost_usd: the stream's headers left before the
                    # router knew it would take more than one attempt.
                    payload["usage"]["gateway_attempts"] = attempts.split("; ")
                yield data_frame(dumps(payload))
            yield _DONE
        except grpc.aio.AioRpcError as exc:
            # Headers are sent: the failure goes in-band, and the stream ends without [DONE] so
            # no client mistakes it for a complete answer.
            yield data_frame(dumps(error_body(GatewayError.from_rpc_error(exc))))
        finally:
            # The client went away (or the stream ended): cancelling the call travels down to the
            # provider, which closes the upstream request.
            call.cancel()

    return EventStream(events(), headers)


_DONE = data_frame(b"[DONE]")


def _chunk_json(chunk: chat_pb2.ChatCompletionChunk, include_usage: bool) -> bytes | None:
    if not include_usage and chunk.HasField("usage"):
        # The providers always ask upstreams for usage (metering needs it); a client that did
        # not ask gets the stream without it, as OpenAI would send it.
        chunk.ClearField("usage")
        if not chunk.choices:
            return None
    return dumps(openai_wire.chunk_to_openai(chunk, include_usage))


@router.post("/v1/embeddings")
async def create_embeddings(request: Request) -> Response:
    """OpenAI ``POST /v1/embeddings``."""
    state: EdgeState = request.app.state.edge
    try:
        body = await read_json(request, state.config.edge.max_body_bytes)
        embedding_request, encoding = openai_wire.parse_embedding_request(body)
    except GatewayError as error:
        return error_response(error)
    call = state.router.Embed(router_pb2.EmbedRequest(embedding=embedding_request), metadata=call_metadata(request))
    try:
        response = await unless_disconnected(request, call, call)
    except ClientDisconnected:
        return abandoned_response()
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    return Response(
        _dumps(openai_wire.embedding_response_to_openai(response.embedding, encoding)),
        media_type="application/json",
        headers={**ratelimit_headers(await call.initial_metadata()), PROVIDER_HEADER: response.embedding.provider},
    )


async def _models(request: Request, model_id: str = "") -> list[chat_pb2.Model]:
    state: EdgeState = request.app.state.edge
    response = await state.router.ListModels(
        router_pb2.ListModelsRequest(model_id=model_id), metadata=call_metadata(request)
    )
    return list(response.models)


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """OpenAI ``GET /v1/models``."""
    try:
        models = await _models(request)
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    return Response(
        _dumps({"object": "list", "data": [openai_wire.model_to_openai(m) for m in models]}),
        media_type="application/json",
    )


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> Response:
    """OpenAI ``GET /v1/models/{model}``: the router answers for exactly what chat would admit."""
    try:
        models = await _models(request, model_id)
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    for model in models:
        if model.id == model_id:
            return Response(_dumps(openai_wire.model_to_openai(model)), media_type="application/json")
    return error_response(
        GatewayError(
            grpc.StatusCode.NOT_FOUND,
            Reason.MODEL_NOT_FOUND,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            {"param": "model"},
        )
    )
