"""A provider with no global key of its own, served only with tenants' credentials.

The LLM Proxy Gateway's model: each user brings credentials, the gateway holds none. The registry
builds the real adapter without a key and wraps it here, so that the per-request selection
(:mod:`services.providers.selection`) can put a tenant's credential on each call, while a call
with none — a tenant that has not added one, or no tenant at all — is refused before anything goes
upstream: FAILED_PRECONDITION naming the provider and how to fix it, never a keyless request and
never a 5xx (nothing is wrong with the gateway; the caller must add a credential).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError, Reason
from services.providers.adapters.base import Adapter
from services.providers.http import not_configured
from services.providers.tenant_credentials import current_credential


def no_credential(provider: str, variable: str) -> GatewayError:
    """The refusal of a call to a tenant-credentials-only provider made without a tenant credential."""
    return GatewayError(
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.MISSING_API_KEY,
        f"no credential for provider '{provider}': add one for your tenant (gateway credentials add "
        f"--provider {provider}), or have the operator set the environment variable {variable}",
        {"provider": provider, "retryable": "false", "missing_variable": variable},
    )


class TenantCredentialsOnly:
    """Wraps an adapter built without a key: it is called only with a tenant credential set."""

    accepts_tenant_credentials = True
    """The selection must run for it: a tenant's credential is its only one."""

    def __init__(self, inner: Adapter, variable: str) -> None:
        self.name = inner.name
        self._inner = inner
        self._variable = variable

    def _check(self) -> None:
        if current_credential.get() is None:
            raise no_credential(self.name, self._variable)

    async def chat(self, model: str, request: chat_pb2.ChatCompletionRequest) -> chat_pb2.ChatCompletion:
        """The inner adapter's chat, with the current tenant credential; refused without one."""
        self._check()
        return await self._inner.chat(model, request)

    async def stream_chat(
        self, model: str, request: chat_pb2.ChatCompletionRequest
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """The inner adapter's stream, with the current tenant credential; refused without one."""
        self._check()
        chunks = self._inner.stream_chat(model, request)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            # Closing this generator (the caller cancelled) must close the upstream request too.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def embed(self, model: str, request: chat_pb2.EmbeddingRequest) -> chat_pb2.EmbeddingResponse:
        """The inner adapter's embeddings, with the current tenant credential; refused without one."""
        self._check()
        return await self._inner.embed(model, request)

    async def list_models(self) -> list[chat_pb2.Model]:
        """Listing is made for no tenant, so there is no credential to list with: not configured."""
        raise not_configured(self.name, self._variable)

    async def aclose(self) -> None:
        """Close the inner adapter's HTTP client."""
        await self._inner.aclose()
