"""ProviderService over gRPC: pick the target's adapter, pass the canonical messages through.

Errors are the adapters' GatewayErrors (the ErrorInterceptor turns them into rich statuses); the
servicer only makes sure each names the provider. A cancelled StreamChat closes the adapter's
iterator, which closes the upstream request.

With a ``tenant_id`` and a :class:`CredentialSelection`, each call runs with the tenant's own
credential for the provider when it has any (:mod:`services.providers.selection`); the response
names the one that served it (``credential_id``, on a stream's first chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.coalesce import ready_batches
from gateway_common.errors import GatewayError, invalid_argument
from services.providers import byok
from services.providers.adapters.base import Adapter
from services.providers.registry import ProviderRegistry
from services.providers.selection import CredentialSelection, estimate_tokens
from services.providers.tenant_credentials import current_credential

log = logging.getLogger(__name__)


def _selection_for(selection: CredentialSelection | None, adapter: Adapter) -> CredentialSelection | None:
    """The selection, for an adapter that can call with a tenant's credential (not the mock)."""
    return selection if getattr(adapter, "accepts_tenant_credentials", False) else None


def _named(error: GatewayError, provider: str) -> GatewayError:
    error.metadata.setdefault("provider", provider)
    return error


class ProviderServicer(providers_pb2_grpc.ProviderServiceServicer):
    """Routes each call to the adapter of ``target.provider``."""

    def __init__(self, registry: ProviderRegistry, selection: CredentialSelection | None = None) -> None:
        self._registry = registry
        self._selection = selection

    def _adapter(self, target: providers_pb2.Target) -> Adapter:
        if not target.provider:
            raise invalid_argument("target.provider must name a provider", "target.provider")
        if not target.model:
            raise invalid_argument("target.model must name the upstream model", "target.model")
        return self._registry.get(target.provider)

    async def Chat(
        self, request: providers_pb2.ChatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> providers_pb2.ChatResponse:
        """One completion from the target provider."""
        adapter = self._adapter(request.target)
        byok.client_key_var.set(byok.client_key(context.invocation_metadata()))
        model, canonical = request.target.model, request.completion
        credential_id = ""
        selection = _selection_for(self._selection, adapter)
        try:
            if selection is None:
                completion = await adapter.chat(model, canonical)
            else:
                completion, credential_id = await selection.call(
                    request.tenant_id,
                    adapter.name,
                    estimate_tokens(canonical),
                    lambda: adapter.chat(model, canonical),
                    lambda c: c.usage.total_tokens,
                )
        except GatewayError as exc:
            raise _named(exc, adapter.name) from None
        return providers_pb2.ChatResponse(completion=completion, credential_id=credential_id)

    async def StreamChat(
        self, request: providers_pb2.StreamChatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        """The target provider's chunks, each passed on as soon as it arrives; chunks that arrived
        together leave in one message (``more_chunks``)."""
        async for batch in ready_batches(self._stream_chat(request, context)):
            message = batch[0]
            if len(batch) > 1:
                message.more_chunks.extend(item.chunk for item in batch[1:])
            yield message

    async def _stream_chat(
        self, request: providers_pb2.StreamChatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        adapter = self._adapter(request.target)
        byok.client_key_var.set(byok.client_key(context.invocation_metadata()))
        walk = None
        selection = _selection_for(self._selection, adapter)
        if selection is not None:
            try:
                walk = await selection.walk(request.tenant_id, adapter.name, estimate_tokens(request.completion))
            except GatewayError as exc:
                raise _named(exc, adapter.name) from None
        if walk is None:
            async for item in _relay(adapter.stream_chat(request.target.model, request.completion), adapter.name):
                yield item
            return
        while True:
            try:
                credential = await walk.next()
            except GatewayError as exc:
                raise _named(exc, adapter.name) from None
            token = current_credential.set(credential)
            try:
                chunks = adapter.stream_chat(request.target.model, request.completion)
                try:
                    # A refusal comes before the first chunk: only then may another credential take over.
                    first = await anext(chunks, None)
                except GatewayError as exc:
                    await _close(chunks)
                    try:
                        await walk.refused(exc)
                    except GatewayError as final:
                        raise _named(final, adapter.name) from None
                    continue
                tokens: int | None = None
                # A ceiling of what a stream that ends early used: the prompt's bytes and the
                # bytes streamed (a token is at least a byte of text), for its settlement.
                ceiling = request.completion.ByteSize()
                if first is not None:
                    try:
                        if first.HasField("usage"):
                            tokens = first.usage.total_tokens
                        ceiling += _streamed_bytes(first)
                        yield providers_pb2.StreamChatResponse(chunk=first, credential_id=credential.credential_id)
                        async for item in _relay(chunks, adapter.name):
                            if item.chunk.HasField("usage"):
                                tokens = item.chunk.usage.total_tokens
                            ceiling += _streamed_bytes(item.chunk)
                            yield item
                    except BaseException:
                        # Broken after content went out, or the caller went away: settle now.
                        walk.abandoned(tokens if tokens is not None else ceiling)
                        raise
                await walk.succeeded(tokens)
                return
            finally:
                # A generator closed from another context cannot reset there; that context ends anyway.
                with contextlib.suppress(ValueError):
                    current_credential.reset(token)

    async def Embed(
        self, request: providers_pb2.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> providers_pb2.EmbedResponse:
        """Embeddings from the target provider (UNIMPLEMENTED where the upstream has none)."""
        adapter = self._adapter(request.target)
        byok.client_key_var.set(byok.client_key(context.invocation_metadata()))
        model, canonical = request.target.model, request.embedding
        credential_id = ""
        selection = _selection_for(self._selection, adapter)
        try:
            if selection is None:
                embedding = await adapter.embed(model, canonical)
            else:
                embedding, credential_id = await selection.call(
                    request.tenant_id,
                    adapter.name,
                    estimate_tokens(canonical),
                    lambda: adapter.embed(model, canonical),
                    lambda e: e.usage.total_tokens,
                )
        except GatewayError as exc:
            raise _named(exc, adapter.name) from None
        return providers_pb2.EmbedResponse(embedding=embedding, credential_id=credential_id)

    async def ListModels(
        self, request: providers_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> providers_pb2.ListModelsResponse:
        """The upstream model lists of the providers configured with ``list_models: true``.

        For one named provider its failure is the answer; across all of them a failing provider
        is logged and left out, so one upstream being down does not empty the list.
        """
        if request.provider:
            adapter = self._registry.get(request.provider)
            if not self._registry.lists_models(request.provider):
                return providers_pb2.ListModelsResponse()
            try:
                return providers_pb2.ListModelsResponse(models=await adapter.list_models())
            except GatewayError as exc:
                raise _named(exc, adapter.name) from None
        adapters = self._registry.listed()
        results = await asyncio.gather(*(a.list_models() for a in adapters), return_exceptions=True)
        models: list[chat_pb2.Model] = []
        for adapter, result in zip(adapters, results, strict=True):
            if isinstance(result, GatewayError):
                log.warning("listing the models of %s failed: %s", adapter.name, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                models.extend(result)
        return providers_pb2.ListModelsResponse(models=models)


def _streamed_bytes(chunk: chat_pb2.ChatCompletionChunk) -> int:
    return sum(len(choice.delta.content.encode()) for choice in chunk.choices)


async def _close(chunks: AsyncIterator[chat_pb2.ChatCompletionChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def _relay(
    chunks: AsyncIterator[chat_pb2.ChatCompletionChunk], provider: str
) -> AsyncIterator[providers_pb2.StreamChatResponse]:
    """The adapter's chunks as responses, its errors naming the provider."""
    try:
        async for chunk in chunks:
            yield providers_pb2.StreamChatResponse(chunk=chunk)
    except GatewayError as exc:
        raise _named(exc, provider) from None
    finally:
        # Closing the adapter's generator closes the upstream response, whether the stream
        # ended, failed, or this call was cancelled.
        await _close(chunks)
