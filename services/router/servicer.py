"""RouterService: translates gRPC calls to the orchestrator and back, nothing more."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.coalesce import ready_batches
from gateway_common.errors import GatewayError
from gateway_common.grpc_server import REQUEST_ID_KEY
from gateway_common.logging import request_id_var
from services.router import catalog, policy, token_count, unified
from services.router.auth_cache import bearer_token
from services.router.conversations import Conversations, Turn
from services.router.orchestrator import UPSTREAM_AUTHORIZATION_KEY, CallContext, HeaderSink, Orchestrator
from services.router.reports import ReportsServicer

Context = grpc.aio.ServicerContext[Any, Any]

COST_TRAILER = "x-gateway-cost-usd"
"""Trailing metadata of Chat and StreamChat: the request's actual cost in USD, a decimal string."""


CLIENT_IP_KEY = "x-gateway-client-ip"
"""Metadata the edge sets to the HTTP client's address (the gRPC peer is the edge itself)."""


def _client_ip(metadata: tuple[tuple[str, str | bytes], ...], context: Context) -> str:
    for key, value in metadata:
        if key == CLIENT_IP_KEY and isinstance(value, str):
            return value
    # A direct gRPC caller: "ipv4:1.2.3.4:5678" / "ipv6:[::1]:5678".
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""


def _call_context(context: Context) -> CallContext:
    metadata = tuple(context.invocation_metadata() or ())
    upstream = next((v for k, v in metadata if k == UPSTREAM_AUTHORIZATION_KEY and isinstance(v, str)), "")
    return CallContext(
        api_key=bearer_token(metadata),
        request_id=request_id_var.get(),
        time_remaining=context.time_remaining,
        client_ip=_client_ip(metadata, context),
        upstream_authorization=upstream,
    )


def _header_sink(context: Context) -> HeaderSink:
    async def send(headers: list[tuple[str, str]]) -> None:
        await context.send_initial_metadata(((REQUEST_ID_KEY, request_id_var.get()), *headers))

    return send


def _send_trailers(context: Context, call: CallContext) -> None:
    # Trailers, because the cost (and the attempts) are known only once the answer is complete,
    # after a stream's last chunk. gRPC keeps only the last set_trailing_metadata: one call for all.
    trailers = list(call.trailers)
    if call.cost_micro_usd is not None:
        trailers.append((COST_TRAILER, f"{call.cost_micro_usd / 1_000_000:.6f}"))
    if trailers:
        context.set_trailing_metadata(tuple(trailers))


class RouterServicer(ReportsServicer, router_pb2_grpc.RouterServiceServicer):
    """The public gRPC API of the gateway."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        providers: providers_pb2_grpc.ProviderServiceAsyncStub,
        metering: metering_pb2_grpc.MeteringServiceAsyncStub,
        conversations: Conversations | None = None,
    ) -> None:
        self._orchestrator = orchestrator
        self._conversations = conversations
        self._providers = providers
        self._metering = metering
        self._upstream_models: list[chat_pb2.Model] = []
        self._upstream_models_at = 0.0
        # The providers' catalogue is fixed for the process; route overrides change while it runs,
        # so the planner's own entries are read at each call.
        self._provider_entries = catalog.provider_models(orchestrator.planner.config)

    def _call(self, context: Context) -> CallContext:
        return _call_context(context)

    async def Chat(self, request: router_pb2.ChatRequest, context: Context) -> router_pb2.ChatResponse:
        """Answers in the form asked: canonical for canonical, unified for unified."""
        is_unified = request.HasField("unified")
        unified.one_form(request.HasField("completion"), is_unified)
        if is_unified:
            unified.refuse_stream_flag(request.unified)
        canonical = unified.to_canonical(request.unified) if is_unified else request.completion
        call = _call_context(context)
        turn = await self._turn(canonical, call)
        completion = await self._orchestrator.chat(turn.run if turn else canonical, call, _header_sink(context))
        if turn is not None:
            await self._require_store().finish(turn, completion, call.request_id)
        _send_trailers(context, call)
        if is_unified:
            return router_pb2.ChatResponse(unified=unified.from_completion(completion))
        return router_pb2.ChatResponse(completion=completion)

    async def StreamChat(
        self, request: router_pb2.StreamChatRequest, context: Context
    ) -> AsyncIterator[router_pb2.StreamChatResponse]:
        """Streams in the form asked: canonical chunks for canonical, unified chunks for unified; with
        ``batch_chunks``, the canonical chunks that are ready together share a message."""
        is_unified = request.HasField("unified")
        unified.one_form(request.HasField("completion"), is_unified)
        canonical = unified.to_canonical(request.unified) if is_unified else request.completion
        call = _call_context(context)
        turn = await self._turn(canonical, call)
        stream = self._orchestrator.stream_chat(turn.run if turn else canonical, call, _header_sink(context))
        try:
            if request.batch_chunks and not is_unified:
                async with contextlib.aclosing(ready_batches(stream)) as batches:
                    async for batch in batches:
                        chunks = [turn.chunk(c) for c in batch] if turn is not None else batch
                        yield router_pb2.StreamChatResponse(chunk=chunks[0], more_chunks=chunks[1:])
            else:
                async for chunk in stream:
                    if turn is not None:
                        chunk = turn.chunk(chunk)
                    if is_unified:
                        yield router_pb2.StreamChatResponse(unified=unified.from_chunk(chunk))
                    else:
                        yield router_pb2.StreamChatResponse(chunk=chunk)
        finally:
            await stream.aclose()
        if turn is not None:
            # Only a stream that ended normally is stored: a broken one was never a response.
            await self._require_store().finish(turn, turn.streamed_completion(), call.request_id)
        _send_trailers(context, call)

    def _require_store(self) -> Conversations:
        if self._conversations is None:
            raise GatewayError(
                grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED", "This router has no response store configured."
            )
        return self._conversations

    async def _turn(self, request: chat_pb2.ChatCompletionRequest, call: CallContext) -> Turn | None:
        # A Responses API request: the router assigns its id and continues its conversation.
        if not request.HasField("conversation"):
            return None
        return await self._require_store().begin(
            request, lambda: self._orchestrator.authenticate(call), call.request_id
        )

    async def GetResponse(
        self, request: router_pb2.GetResponseRequest, context: Context
    ) -> router_pb2.GetResponseResponse:
        """A stored response of the caller's tenant, as canonical data."""
        call = _call_context(context)
        principal = await self._orchestrator.authenticate(call)
        conversation, _ = await self._require_store().get(principal, request.response_id, call.request_id)
        return router_pb2.GetResponseResponse(request=conversation.request, completion=conversation.completion)

    async def DeleteResponse(
        self, request: router_pb2.DeleteResponseRequest, context: Context
    ) -> router_pb2.DeleteResponseResponse:
        """Deletes a stored response of the caller's tenant."""
        call = _call_context(context)
        principal = await self._orchestrator.authenticate(call)
        await self._require_store().delete(principal, request.response_id, call.request_id)
        return router_pb2.DeleteResponseResponse(response_id=request.response_id)

    async def ListResponseInputItems(
        self, request: router_pb2.ListResponseInputItemsRequest, context: Context
    ) -> router_pb2.ListResponseInputItemsResponse:
        """The input messages of a stored response of the caller's tenant."""
        call = _call_context(context)
        principal = await self._orchestrator.authenticate(call)
        _, inputs = await self._require_store().get(principal, request.response_id, call.request_id)
        return router_pb2.ListResponseInputItemsResponse(response_id=request.response_id, messages=inputs.messages)

    async def Embed(self, request: router_pb2.EmbedRequest, context: Context) -> router_pb2.EmbedResponse:
        embedding = await self._orchestrator.embed(request.embedding, _call_context(context), _header_sink(context))
        return router_pb2.EmbedResponse(embedding=embedding)

    async def ListModels(
        self, request: router_pb2.ListModelsRequest, context: Context
    ) -> router_pb2.ListModelsResponse:
        """Every model the caller may use, or the one it names: each entry passes admission's own checks."""
        principal = await self._orchestrator.authenticate(_call_context(context))
        models = [
            chat_pb2.Model(id=ident, provider=provider, owned_by=owner, created=0)
            for ident, provider, owner in catalog.merge(self._orchestrator.planner.catalog(), self._provider_entries)
        ]
        if request.model_id:
            # Anything chat admits answers, listed or not (any mock:…, any provider:model).
            candidates = self._orchestrator.usable_candidates(principal, request.model_id)
            known = next((m for m in models if m.id == request.model_id), None)
            if known is None:
                provider = candidates[0].provider
                known = chat_pb2.Model(id=request.model_id, provider=provider, owned_by=provider, created=0)
            return router_pb2.ListModelsResponse(models=[catalog.describe(known, candidates)])
        models += await self._listed_upstream_models()
        seen: set[str] = set()
        result = router_pb2.ListModelsResponse()
        for model in models:
            if model.id in seen:
                continue
            try:
                candidates = self._orchestrator.usable_candidates(principal, model.id)
            except GatewayError:
                continue
            seen.add(model.id)
            result.models.append(catalog.describe(model, candidates))
        return result

    async def GetUsage(self, request: router_pb2.GetUsageRequest, context: Context) -> router_pb2.GetUsageResponse:
        """Usage of the principal's own tenant, or of the tenant an admin key names: never unscoped.

        Metering trusts the router to pass the principal's tenant, and refuses it an all-tenant read.
        """
        call = _call_context(context)
        principal = await self._orchestrator.authenticate(call)
        query = metering_pb2.QueryUsageRequest(
            tenant_id=policy.usage_tenant(principal, request.tenant_id),
            key_id=request.key_id,
            group_by=request.group_by,
        )
        if request.HasField("start_time"):
            query.start_time.CopyFrom(request.start_time)
        if request.HasField("end_time"):
            query.end_time.CopyFrom(request.end_time)
        try:
            response = await self._metering.QueryUsage(
                query, timeout=call.time_remaining() or 10.0, metadata=((REQUEST_ID_KEY, call.request_id),)
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.from_rpc_error(exc, "metering") from None
        return router_pb2.GetUsageResponse(rows=response.rows)

    async def CountTokens(
        self, request: router_pb2.CountTokensRequest, context: Context
    ) -> router_pb2.CountTokensResponse:
        """The prompt's token count for an authenticated caller; no quota, no provider, no usage."""
        principal = await self._orchestrator.authenticate(_call_context(context))
        return token_count.count_tokens(self._orchestrator, principal, request.completion)

    async def _listed_upstream_models(self) -> list[chat_pb2.Model]:
        # Upstream lists change rarely; asking on every call would put a provider round trip
        # (and its failure modes) on a path clients poll.
        if time.monotonic() - self._upstream_models_at > 60:
            try:
                response = await self._providers.ListModels(providers_pb2.ListModelsRequest(), timeout=10)
                self._upstream_models = list(response.models)
            except grpc.aio.AioRpcError:
                pass
            self._upstream_models_at = time.monotonic()
        return self._upstream_models
