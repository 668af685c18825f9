"""ProviderService over gRPC: pick the target's adapter, pass the canonical messages through.

Errors are the adapters' GatewayErrors (the ErrorInterceptor turns them into rich statuses); the
servicer only makes sure each names the provider. A cancelled StreamChat closes the adapter's
iterator, which closes the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.errors import GatewayError, invalid_argument
from services.providers import byok
from services.providers.adapters.base import Adapter
from services.providers.registry import ProviderRegistry

log = logging.getLogger(__name__)


def _named(error: GatewayError, provider: str) -> GatewayError:
    error.metadata.setdefault("provider", provider)
    return error


class ProviderServicer(providers_pb2_grpc.ProviderServiceServicer):
    """Routes each call to the adapter of ``target.provider``."""

    def __init__(self, registry: ProviderRegistry) -> None:
        self._registry = registry

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
        try:
            completion = await adapter.chat(request.target.model, request.completion)
        except GatewayError as exc:
            raise _named(exc, adapter.name) from None
        return providers_pb2.ChatResponse(completion=completion)

    async def StreamChat(
        self, request: providers_pb2.StreamChatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        """The target provider's chunks, each passed on as soon as it arrives."""
        adapter = self._adapter(request.target)
        byok.client_key_var.set(byok.client_key(context.invocation_metadata()))
        chunks = adapter.stream_chat(request.target.model, request.completion)
        try:
            async for chunk in chunks:
                yield providers_pb2.StreamChatResponse(chunk=chunk)
        except GatewayError as exc:
            raise _named(exc, adapter.name) from None
        finally:
            # Closing the adapter's generator closes the upstream response, whether the stream
            # ended, failed, or this call was cancelled.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def Embed(
        self, request: providers_pb2.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> providers_pb2.EmbedResponse:
        """Embeddings from the target provider (UNIMPLEMENTED where the upstream has none)."""
        adapter = self._adapter(request.target)
        byok.client_key_var.set(byok.client_key(context.invocation_metadata()))
        try:
            embedding = await adapter.embed(request.target.model, request.embedding)
        except GatewayError as exc:
            raise _named(exc, adapter.name) from None
        return providers_pb2.EmbedResponse(embedding=embedding)

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
