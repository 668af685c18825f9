"""The Gemini API (``{base}/v1beta/models/{model}:generateContent`` and friends), with its pooled client.

Translation lives in :mod:`services.providers.translate.gemini` (field decisions documented
there); this module does the HTTP: the ``x-goog-api-key`` header, ``streamGenerateContent`` with
``alt=sse`` (a stream is complete once every candidate sent a ``finishReason``), embeddings through
``batchEmbedContents`` and the paged model list. A server that ignores ``alt=sse`` and answers a
stream with one JSON array of responses (the API's default stream form) is read as well.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from gateway.chat.v1 import chat_pb2
from gateway_common.config import HttpProviderConfig
from gateway_common.errors import GatewayError
from services.providers.http import (
    UpstreamStream,
    bad_response,
    build_client,
    open_stream,
    provider_events,
    read_json,
    send,
    stream_broken,
)
from services.providers.translate.gemini import (
    GeminiStream,
    chat_request_to_gemini,
    completion_from_gemini,
    embedding_request_to_gemini,
    embeddings_from_gemini,
    error_from_payload,
    models_from_gemini,
)


class GeminiAdapter:
    """One Gemini upstream (config ``type: gemini``) and its pooled client."""

    accepts_tenant_credentials = True
    """Its client puts a tenant's own credential on a call (see :meth:`UpstreamClient.headers`)."""

    def __init__(self, name: str, config: HttpProviderConfig, api_key: str | None, base_url: str) -> None:
        self.name = name
        self._config = config
        self._secrets = (api_key,)
        headers = dict(config.headers)
        if api_key:
            headers["x-goog-api-key"] = api_key
        self._client = build_client(config, base_url, headers, key_header="x-goog-api-key", key_prefix="")

    @staticmethod
    def _path(model: str, method: str) -> str:
        # Clients may name the model as the API does ("models/gemini-2.0-flash") or bare.
        return f"v1beta/models/{quote(model.removeprefix('models/'), safe='')}:{method}"

    def _body(self, request: chat_pb2.ChatCompletionRequest, model: str) -> dict[str, Any]:
        try:
            return chat_request_to_gemini(request, model)
        except GatewayError as error:
            # A refused field is this provider's limitation: say which provider, for the router and client.
            error.metadata.setdefault("provider", self.name)
            raise

    async def chat(self, model: str, request: chat_pb2.ChatCompletionRequest) -> chat_pb2.ChatCompletion:
        """POST models/{model}:generateContent and translate the answer."""
        response = await send(
            self._client,
            "POST",
            self._path(model, "generateContent"),
            provider=self.name,
            total_timeout_s=self._config.total_timeout_s,
            secrets=self._secrets,
            json=self._body(request, model),
        )
        return completion_from_gemini(read_json(response, self.name), self.name, model=model, created=int(time.time()))

    async def stream_chat(
        self, model: str, request: chat_pb2.ChatCompletionRequest
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """POST models/{model}:streamGenerateContent?alt=sse, yielding canonical chunks as events arrive.

        Raises UPSTREAM_STREAM_BROKEN when the stream ends before every candidate finished or carries
        an event that is not JSON; an error object inside the stream raises the mapped upstream error.
        """
        body = self._body(request, model)
        translator = GeminiStream(self.name, model=model, created=int(time.time()))
        async with open_stream(
            self._client,
            "POST",
            self._path(model, "streamGenerateContent"),
            provider=self.name,
            secrets=self._secrets,
            json=body,
            params={"alt": "sse"},
        ) as response:
            if response.headers.get("content-type", "").startswith("application/json"):
                for payload in await self._json_array(response):
                    for chunk in translator.feed_object(payload):
                        yield chunk
                for chunk in translator.close():
                    yield chunk
                return
            events = provider_events(response, provider=self.name, config=self._config, secrets=self._secrets)
            try:
                async for event in events:
                    if not event.data.strip():
                        continue
                    for chunk in translator.feed(event.data):
                        yield chunk
                # Gemini has no terminating event: the stream is over when the server closes it.
                for chunk in translator.close():
                    yield chunk
            finally:
                await events.aclose()

    async def _json_array(self, response: UpstreamStream) -> list[dict[str, Any]]:
        """The responses of a stream sent as one JSON array (no ``alt=sse``)."""
        raw = await response.read_all(provider=self.name, timeout_s=self._config.total_timeout_s, secrets=self._secrets)
        try:
            data = json.loads(raw)
        except ValueError:
            raise stream_broken(self.name, f"{self.name} sent a JSON stream that is not valid JSON") from None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            raise error_from_payload(self.name, data)
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise stream_broken(self.name, f"{self.name} sent a JSON stream that is not an array of responses")
        return data

    async def embed(self, model: str, request: chat_pb2.EmbeddingRequest) -> chat_pb2.EmbeddingResponse:
        """POST models/{model}:batchEmbedContents (one request per input)."""
        bare = model.removeprefix("models/")
        response = await send(
            self._client,
            "POST",
            self._path(bare, "batchEmbedContents"),
            provider=self.name,
            total_timeout_s=self._config.total_timeout_s,
            secrets=self._secrets,
            json=embedding_request_to_gemini(request, bare),
        )
        return embeddings_from_gemini(read_json(response, self.name), self.name, model=bare, request=request)

    async def list_models(self) -> list[chat_pb2.Model]:
        """GET models (pageSize 1000, the API's maximum, so one page holds them all): the chat and
        embedding models, as ``"<provider>:<model>"``."""
        response = await send(
            self._client,
            "GET",
            "v1beta/models",
            provider=self.name,
            total_timeout_s=self._config.total_timeout_s,
            secrets=self._secrets,
            params={"pageSize": 1000},
        )
        data = read_json(response, self.name)
        if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
            raise bad_response(self.name, f"{self.name} answered the model list without a 'models' array")
        return models_from_gemini(data, self.name)

    async def aclose(self) -> None:
        """Close the pooled client."""
        await self._client.aclose()
