"""The one interface every upstream adapter implements.

An adapter speaks one wire protocol (OpenAI, Azure OpenAI, Anthropic, Gemini, the mock). It
receives canonical protobuf requests and returns canonical protobuf responses: the canonical
messages are the gateway's domain model for chat, so adapters translate straight between them and
the upstream's JSON instead of through a second set of classes.

Failures are :class:`gateway_common.errors.GatewayError` with ErrorInfo metadata the router acts on:
``retryable`` ("true"/"false"), ``upstream_status`` (HTTP status), ``upstream_code`` (the
upstream's error code/type), ``provider``; and ``retry_after_s`` from the upstream's Retry-After.
A stream that ends before its terminating event, or carries a malformed chunk, raises such an
error instead of ending cleanly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from gateway.chat.v1 import chat_pb2


class Adapter(Protocol):
    """A configured upstream (one per provider entry in the config), holding its pooled HTTP client."""

    name: str
    """The provider's name in the configuration."""

    async def chat(self, model: str, request: chat_pb2.ChatCompletionRequest) -> chat_pb2.ChatCompletion:
        """Run a completion on ``model`` (the upstream's model or deployment name)."""
        ...

    def stream_chat(
        self, model: str, request: chat_pb2.ChatCompletionRequest
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """Stream a completion, yielding chunks as the upstream sends them; the last chunk carries usage.

        Closing the iterator (the caller cancelled) closes the upstream request.
        """
        ...

    async def embed(self, model: str, request: chat_pb2.EmbeddingRequest) -> chat_pb2.EmbeddingResponse:
        """Embed texts; adapters without embeddings raise UNIMPLEMENTED."""
        ...

    async def list_models(self) -> list[chat_pb2.Model]:
        """The upstream's own model list (ids as "provider:model")."""
        ...

    async def aclose(self) -> None:
        """Close the pooled HTTP client."""
        ...
