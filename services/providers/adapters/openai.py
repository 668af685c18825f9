"""The OpenAI wire protocol: OpenAI itself, Azure OpenAI, and any OpenAI-compatible server.

Translation is :mod:`gateway_common.openai_wire` (the same codec the edge uses); this module adds
the flavours' differences and what real servers do that the protocol does not promise:

- Azure: ``{endpoint}/openai/deployments/{deployment}/...?api-version=...``, an ``api-key``
  header, no ``model`` in the body (the deployment is the model), a first stream chunk with no
  choices that carries only ``prompt_filter_results`` (moved onto the next chunk), and a 400
  ``content_filter`` error (reason CONTENT_FILTERED).
- Usage: streams always ask for ``stream_options.include_usage`` and end, as OpenAI's do, with one
  chunk without choices that carries the usage (DeepSeek attaches usage to the finishing chunk,
  some servers to every chunk: the latest is moved there); a server that sends no usage (Ollama)
  gets the gateway's own count, marked ``usage.estimated``.
- Tool calls: a choice that called tools and finished "stop" (Ollama; OpenAI when tool_choice
  names a function) finishes "tool_calls"; a whole call sent without ``index`` (Ollama) gets its
  position, and a second call reusing an index gets the next free one.
- A stream ends with ``data: [DONE]``: one that ends without it before every choice delivered its
  ``finish_reason``, or carries a chunk that is not JSON, raises UPSTREAM_STREAM_BROKEN instead of
  ending cleanly. One that closes without it after every ``finish_reason`` is a complete answer
  (the end is recognised by its content; usage is the gateway's count when none came).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from gateway.chat.v1 import chat_pb2
from gateway_common.config import HttpProviderConfig
from gateway_common.errors import GatewayError
from gateway_common.openai_wire import (
    chat_request_to_openai,
    chunk_from_openai,
    completion_from_openai,
    embedding_request_to_openai,
    embedding_response_from_openai,
    from_struct,
)
from gateway_common.tokens import estimate_embedding_tokens, estimate_prompt_tokens, estimate_text_tokens
from services.providers.byok import client_key_var, missing_client_key
from services.providers.http import (
    bad_response,
    build_client,
    drain,
    open_stream,
    provider_events,
    read_json,
    send,
    stream_broken,
    upstream_error,
)
from services.providers.tenant_credentials import current_credential

DEFAULT_AZURE_API_VERSION = "2024-10-21"


class OpenAIAdapter:
    """One OpenAI-protocol upstream (``type`` openai, azure or openai_compatible) and its pooled client."""

    accepts_tenant_credentials = True
    """Its client puts a tenant's own credential on a call (see :meth:`UpstreamClient.headers`)."""

    def __init__(self, name: str, config: HttpProviderConfig, api_key: str | None, base_url: str) -> None:
        self.name = name
        self._config = config
        self._azure = config.type == "azure"
        self._own_secrets = (api_key,)
        # Bring-your-own-key: only an upstream with no key of its own takes the client's.
        self._forward_client_key = config.forward_client_key and not api_key
        headers = dict(config.headers)
        if api_key:
            if self._azure:
                headers["api-key"] = api_key
            else:
                headers["Authorization"] = f"Bearer {api_key}"
        self._client = (
            build_client(config, base_url, headers, key_header="api-key", key_prefix="")
            if self._azure
            else build_client(config, base_url, headers)
        )
        self._params = {"api-version": config.api_version or DEFAULT_AZURE_API_VERSION} if self._azure else {}

    @property
    def _secrets(self) -> tuple[str | None, ...]:
        """The secrets every error of this call redacts: the configured key and the client's."""
        return (*self._own_secrets, client_key_var.get()) if self._forward_client_key else self._own_secrets

    def _call_headers(self) -> dict[str, str]:
        """Per-request headers: the client's own key when this upstream forwards it."""
        if not self._forward_client_key or current_credential.get() is not None:
            # A tenant's own credential (put on by the client's auth) takes the client key's place.
            return {}
        key = client_key_var.get()
        if key is None:
            raise missing_client_key(self.name)
        return {"api-key": key} if self._azure else {"Authorization": f"Bearer {key}"}

    def _path(self, model: str, operation: str) -> str:
        if self._azure:
            return f"openai/deployments/{quote(model, safe='')}/{operation}"
        return operation

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        if self._azure:
            # The deployment in the URL is the model; Azure ignores or rejects a second one.
            body.pop("model", None)
        return body

    def _body_error(self, data: Any) -> GatewayError | None:
        """An error object a server sent with status 200 (in a body or as a stream chunk)."""
        if not isinstance(data, dict) or data.get("error") is None or "choices" in data:
            return None
        error = data["error"]
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and 400 <= code <= 599 else 500
        return upstream_error(self.name, status, {}, json.dumps(data).encode(), secrets=self._secrets)

    async def chat(self, model: str, request: chat_pb2.ChatCompletionRequest) -> chat_pb2.ChatCompletion:
        """POST chat/completions and translate the answer."""
        body = self._body(chat_request_to_openai(request, model, stream=False))
        response = await send(
            self._client,
            "POST",
            self._path(model, "chat/completions"),
            provider=self.name,
            total_timeout_s=self._config.total_timeout_s,
            secrets=self._secrets,
            headers=self._call_headers(),
            json=body,
            params=self._params,
        )
        data = read_json(response, self.name)
        error = self._body_error(data)
        if error is not None:
            raise error
        completion = completion_from_openai(data, self.name)
        pieces: list[str] = []
        for choice in completion.choices:
            message = choice.message
            if message.tool_calls and choice.finish_reason == chat_pb2.FINISH_REASON_STOP:
                choice.finish_reason = chat_pb2.FINISH_REASON_TOOL_CALLS
            pieces.append(message.text + message.refusal)
            pieces.extend(call.function.name + call.function.arguments for call in message.tool_calls)
        if not completion.HasField("usage"):
            completion.usage.CopyFrom(_estimated_usage(request, pieces))
        return completion

    async def stream_chat(
        self, model: str, request: chat_pb2.ChatCompletionRequest
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """POST chat/completions with ``stream: true``, yielding canonical chunks as events arrive."""
        body = self._body(chat_request_to_openai(request, model, stream=True))
        assembler = _StreamAssembler(request, self.name)
        async with open_stream(
            self._client,
            "POST",
            self._path(model, "chat/completions"),
            provider=self.name,
            secrets=self._secrets,
            headers=self._call_headers(),
            json=body,
            params=self._params,
        ) as response:
            events = provider_events(response, provider=self.name, config=self._config, secrets=self._secrets)
            try:
                done = False
                async for event in events:
                    text = event.data.strip()
                    if text == "[DONE]":
                        done = True
                        break
                    if not text:
                        continue
                    try:
                        data = json.loads(text)
                    except ValueError:
                        raise stream_broken(self.name, f"{self.name} sent a stream chunk that is not JSON") from None
                    error = self._body_error(data)
                    if error is not None:
                        raise error
                    chunk = assembler.feed(chunk_from_openai(data, self.name))
                    if chunk is not None:
                        yield chunk
                if not done and not assembler.finished:
                    # A stream that delivered every choice's finish_reason is a complete answer
                    # even when the server closed without [DONE]; one that did not is broken.
                    raise stream_broken(self.name, f"the stream from {self.name} ended before 'data: [DONE]'")
                yield assembler.finish()
                if done:
                    await drain(events)
            finally:
                await events.aclose()

    async def embed(self, model: str, request: chat_pb2.EmbeddingRequest) -> chat_pb2.EmbeddingResponse:
        """POST embeddings (float vectors; base64 answers are decoded too)."""
        body = self._body(embedding_request_to_openai(request, model))
        response = await send(
            self._client,
            "POST",
            self._path(model, "embeddings"),
            provider=self.name,
            total_timeout_s=self._config.total_timeout_s,
            secrets=self._secrets,
            headers=self._call_headers(),
            json=body,
            params=self._params,
        )
        data = read_json(response, self.name)
        error = self._body_error(data)
        if error is not None:
            raise error
        result = embedding_response_from_openai(data, self.name)
        if not isinstance(data.get("usage"), dict):
            tokens = estimate_embedding_tokens(request)
            result.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens, estimated=True))
        return result

    async def list_models(self) -> list[chat_pb2.Model]:
        """GET models (Azure: the resource's models), as ``"<provider>:<id>"``."""
        response = await send(
            self._client,
            "GET",
            "openai/models" if self._azure else "models",
            provider=self.name,
            total_timeout_s=self._config.total_timeout_s,
            secrets=self._secrets,
            headers=self._call_headers(),
            params=self._params,
        )
        data = read_json(response, self.name)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise bad_response(self.name, f"{self.name} answered the model list without a 'data' array")
        return [
            chat_pb2.Model(
                id=f"{self.name}:{item['id']}",
                created=int(item.get("created") or 0),
                owned_by=str(item.get("owned_by") or ""),
                provider=self.name,
            )
            for item in items
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]

    async def aclose(self) -> None:
        """Close the pooled client."""
        await self._client.aclose()


def _estimated_usage(request: chat_pb2.ChatCompletionRequest, pieces: list[str]) -> chat_pb2.Usage:
    prompt = estimate_prompt_tokens(request)
    completion = estimate_text_tokens("".join(pieces))
    return chat_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion, estimated=True
    )


class _Choice:
    """What the assembler remembers of one choice of a stream."""

    def __init__(self) -> None:
        self.role_sent = False
        self.called_tools = False
        self.finished = False
        self.call_ids: dict[int, str] = {}  # canonical index -> id
        self.remap: dict[int, int] = {}  # upstream index -> canonical index


class _StreamAssembler:
    """Normalises an OpenAI-style chunk stream (see the module docstring) and counts what it carried."""

    def __init__(self, request: chat_pb2.ChatCompletionRequest, provider: str) -> None:
        self._request = request
        self._provider = provider
        self._carry: dict[str, Any] | None = None
        self._choices: dict[int, _Choice] = {}
        self._pieces: list[str] = []
        self._usage: chat_pb2.Usage | None = None
        self._last = chat_pb2.ChatCompletionChunk(provider=provider)

    def feed(self, chunk: chat_pb2.ChatCompletionChunk) -> chat_pb2.ChatCompletionChunk | None:
        """The chunk to pass on, or None when what it carries goes into a later one."""
        if chunk.HasField("usage"):
            # Usage is sent once, in the final chunk (see finish); DeepSeek attaches it to the
            # finishing chunk and some servers to every chunk, so the latest one is kept.
            self._usage = chat_pb2.Usage()
            self._usage.CopyFrom(chunk.usage)
            chunk.ClearField("usage")
            if not chunk.choices:
                self._last = chunk
                return None
        if not chunk.choices and not chunk.id:
            # Azure's leading chunk: no id, no choices, just prompt_filter_results.
            if chunk.HasField("extra"):
                self._carry = {**(self._carry or {}), **from_struct(chunk.extra)}
            return None
        if self._carry:
            for key, value in self._carry.items():
                if key not in chunk.extra.fields:
                    chunk.extra.update({key: value})
            self._carry = None
        for choice in chunk.choices:
            state = self._choices.setdefault(choice.index, _Choice())
            delta = choice.delta
            if delta.role:
                if state.role_sent:
                    # Ollama repeats the role in every delta; clients expect it once.
                    delta.role = chat_pb2.ROLE_UNSPECIFIED
                state.role_sent = True
            if delta.HasField("content"):
                self._pieces.append(delta.content)
            if delta.HasField("refusal"):
                self._pieces.append(delta.refusal)
            for call in delta.tool_calls:
                state.called_tools = True
                self._place(state, call)
                self._pieces.append(call.name + call.arguments)
            if choice.finish_reason == chat_pb2.FINISH_REASON_STOP and state.called_tools:
                choice.finish_reason = chat_pb2.FINISH_REASON_TOOL_CALLS
            if choice.finish_reason != chat_pb2.FINISH_REASON_UNSPECIFIED:
                state.finished = True
        self._last = chunk
        return chunk

    @property
    def finished(self) -> bool:
        """Whether every choice the stream opened has delivered its finish_reason."""
        return bool(self._choices) and all(state.finished for state in self._choices.values())

    @staticmethod
    def _place(state: _Choice, call: chat_pb2.ToolCallDelta) -> None:
        upstream = call.index
        if call.HasField("id"):
            known = state.call_ids.get(state.remap.get(upstream, upstream))
            if known is not None and known != call.id:
                # A new call reusing an index (calls sent whole without one): give it the next slot.
                state.remap[upstream] = max(state.call_ids) + 1
            state.call_ids[state.remap.get(upstream, upstream)] = call.id
        call.index = state.remap.get(upstream, upstream)

    def finish(self) -> chat_pb2.ChatCompletionChunk:
        """After [DONE]: the final chunk, with no choices and the usage (the gateway's count when the
        upstream sent none)."""
        last = self._last
        chunk = chat_pb2.ChatCompletionChunk(
            id=last.id,
            created=last.created,
            model=last.model,
            system_fingerprint=last.system_fingerprint,
            service_tier=last.service_tier,
            provider=self._provider,
        )
        if not last.choices and last.HasField("extra"):
            chunk.extra.CopyFrom(last.extra)
        chunk.usage.CopyFrom(self._usage or _estimated_usage(self._request, self._pieces))
        return chunk
