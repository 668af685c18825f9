"""Anthropic's Messages API (``POST {base}/v1/messages``), with its pooled client.

Translation lives in :mod:`services.providers.translate.anthropic` (what each field becomes, and
which ones are refused, is documented there); this module only does the HTTP: the ``x-api-key``
and ``anthropic-version`` headers, the SSE stream (which must end with ``message_stop``), and the
model list. Anthropic has no embeddings API: :meth:`AnthropicAdapter.embed` raises UNIMPLEMENTED.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from gateway.chat.v1 import chat_pb2
from gateway_common.config import HttpProviderConfig
from gateway_common.errors import GatewayError
from services.providers.http import (
    bad_response,
    build_client,
    drain,
    open_stream,
    provider_events,
    read_json,
    send,
    unimplemented,
)
from services.providers.translate.anthropic import AnthropicStream, chat_request_to_anthropic, completion_from_anthropic

DEFAULT_API_VERSION = "2023-06-01"


class AnthropicAdapter:
    """One Anthropic upstream (config ``type: anthropic``) and its pooled client."""

    accepts_tenant_credentials = True
    """Its client puts a tenant's own credential on a call (see :meth:`UpstreamClient.headers`)."""

    def __init__(self, name: str, config: HttpProviderConfig, api_key: str | None, base_url: str) -> None:
        self.name = name
        self._config = config
        self._secrets = (api_key,)
        headers = dict(config.headers)
        headers["anthropic-version"] = config.api_version or DEFAULT_API_VERSION
        if api_key:
            headers["x-api-key"] = api_key
        self._client = build_client(config, base_url, headers, key_header="x-api-key", key_prefix="")

    def _body(self, request: chat_pb2.ChatCompletionRequest, model: str, *, stream: bool) -> dict[str, Any]:
        try:
            return chat_request_to_anthropic(
                request, model, stream=stream, default_max_tokens=self._config.default_max_tokens
            )
        except GatewayError as error:
            # A refused field is this provider's limitation: say which provider, for the router and client.
            error.metadata.setdefault("provider", self.name)
            raise

    async def chat(self, model: str, request: chat_pb2.ChatCompletionRequest) -> chat_pb2.ChatCompletion:
        """POST v1/messages and translate the answer."""
        body = self._body(request, model, stream=False)
        response = await send(
            self._client,
            "POST",
            "v1/messages",
            provider=self.name,
            total_timeout_s=self._config.total_timeout_s,
            secrets=self._secrets,
            json=body,
        )
        return completion_from_anthropic(read_json(response, self.name), self.name, created=int(time.time()))

    async def stream_chat(
        self, model: str, request: chat_pb2.ChatCompletionRequest
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """POST v1/messages with ``stream: true``, yielding canonical chunks as events arrive.

        Raises UPSTREAM_STREAM_BROKEN when the stream ends before ``message_stop`` or carries an
        event that is not JSON, and the mapped upstream error for an ``error`` event.
        """
        body = self._body(request, model, stream=True)
        translator = AnthropicStream(self.name, created=int(time.time()))
        async with open_stream(
            self._client, "POST", "v1/messages", provider=self.name, secrets=self._secrets, json=body
        ) as response:
            events = provider_events(response, provider=self.name, config=self._config, secrets=self._secrets)
            try:
                async for event in events:
                    if not event.data.strip():
                        continue
                    for chunk in translator.feed(event.event, event.data):
                        yield chunk
                    if translator.done:
                        break
                translator.close()
                await drain(events)
            finally:
                await events.aclose()

    async def embed(self, model: str, request: chat_pb2.EmbeddingRequest) -> chat_pb2.EmbeddingResponse:
        """Anthropic offers no embeddings: UNIMPLEMENTED."""
        raise unimplemented(self.name, "embeddings")

    async def list_models(self) -> list[chat_pb2.Model]:
        """GET v1/models (limit 1000, Anthropic's maximum, so one page holds them all), as ``"<provider>:<id>"``."""
        response = await send(
            self._client,
            "GET",
            "v1/models",
            provider=self.name,
            total_timeout_s=self._config.total_timeout_s,
            secrets=self._secrets,
            params={"limit": 1000},
        )
        data = read_json(response, self.name)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise bad_response(self.name, f"{self.name} answered the model list without a 'data' array")
        return [
            chat_pb2.Model(
                id=f"{self.name}:{item['id']}",
                created=_timestamp(item.get("created_at")),
                owned_by="anthropic",
                provider=self.name,
            )
            for item in items
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]

    async def aclose(self) -> None:
        """Close the pooled client."""
        await self._client.aclose()


def _timestamp(value: Any) -> int:
    """Unix seconds of an RFC 3339 time ("2025-02-19T00:00:00Z"); 0 when absent or unreadable."""
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
