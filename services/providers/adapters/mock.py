"""The mock provider: deterministic answers for tests, demos and stub mode, with error injection.

The answer is ``"Mock reply to: <the last user text, first 20 words>"`` (``"Mock reply."`` when
there is no user text), the same for the same input. Streams send one word per chunk (the first
carries the role), then a chunk with the finish reason, then a chunk with the usage: prompt
tokens from :func:`gateway_common.tokens.estimate_prompt_tokens`, completion tokens = words.
``max_tokens``/``max_completion_tokens`` cut the answer after that many words (finish "length").

The model name provokes behaviour (``mock:<name>``):

``error-<status>``  raise what :mod:`services.providers.http` makes of an upstream answering
                    ``<status>`` (400-599) with an OpenAI-style error body; 429 carries
                    ``retry-after: 1``.
``timeout``         never answer: wait until cancelled (the caller's deadline fires).
``slow-<ms>``       wait ``<ms>`` milliseconds between chunks.
``stream-break``    stream three chunks, then raise the broken-stream error (Chat raises it at once).
``tools``           call the first tool of the request with arguments ``{}`` (finish "tool_calls",
                    one completion token); a request without tools gets the plain text answer.

Any other name answers normally. Injected behaviour applies to Chat, StreamChat and Embed alike
(``stream-break`` and ``tools`` only concern chat). Embeddings are 8 floats in [-1, 1) derived
from SHA-256 of each text. Responses name the provider by its label (``"<name> (stub)"`` in stub
mode); errors name it by its config name, as the router's route health expects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.chat.v1 import chat_pb2
from gateway_common.config import MockProviderConfig
from gateway_common.tokens import estimate_embedding_tokens, estimate_prompt_tokens
from services.providers.http import stream_broken, upstream_error

_REPLY_WORDS = 20
_STREAM_BREAK_AFTER = 3
_EMBEDDING_DIMENSIONS = 8

# OpenAI's (type, code) per status, so an injected error looks like a real upstream's.
_ERROR_BODIES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "request_timeout"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def injected_error(provider: str, status: int) -> Exception:
    """Exactly what an upstream answering ``status`` maps to (see :func:`http.upstream_error`)."""
    kind, code = _ERROR_BODIES.get(status, ("server_error" if status >= 500 else "invalid_request_error", "mock_error"))
    headers = {"retry-after": "1"} if status == 429 else {}
    body = {"error": {"message": f"mock error injected: HTTP {status}", "type": kind, "param": None, "code": code}}
    return upstream_error(provider, status, headers, json.dumps(body).encode())


def _last_user_text(request: chat_pb2.ChatCompletionRequest) -> str:
    for message in reversed(request.messages):
        if message.role == chat_pb2.ROLE_USER:
            if message.HasField("text"):
                return message.text
            return " ".join(part.text for part in message.parts if part.WhichOneof("part") == "text")
    return ""


def reply_words(request: chat_pb2.ChatCompletionRequest) -> list[str]:
    """The words of the mock's answer to ``request``."""
    words = _last_user_text(request).split()[:_REPLY_WORDS]
    return ["Mock", "reply", "to:", *words] if words else ["Mock", "reply."]


def embedding_vector(text: str) -> list[float]:
    """The mock's embedding of ``text``: 8 floats in [-1, 1) from its SHA-256."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i] - 128) / 128 for i in range(_EMBEDDING_DIMENSIONS)]


class MockAdapter:
    """The mock provider; also serves ``stub: true`` providers, labelled ``"<name> (stub)"``."""

    def __init__(
        self,
        name: str,
        config: MockProviderConfig,
        *,
        label: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._config = config
        self._label = label or name
        self._sleep = sleep

    async def _behave(self, model: str) -> float:
        """Wait ``latency_ms`` and apply the model's injected behaviour; returns the delay between chunks."""
        if self._config.latency_ms:
            await self._sleep(self._config.latency_ms / 1000)
        if model == "timeout":
            await asyncio.Event().wait()
        if model.startswith("error-") and model[6:].isdigit() and 400 <= int(model[6:]) <= 599:
            raise injected_error(self.name, int(model[6:]))
        if model.startswith("slow-") and model[5:].isdigit():
            return int(model[5:]) / 1000
        return self._config.chunk_delay_ms / 1000

    def _plan(
        self, model: str, request: chat_pb2.ChatCompletionRequest
    ) -> tuple[list[str], chat_pb2.Tool | None, chat_pb2.FinishReason.ValueType, chat_pb2.Usage]:
        # Custom tools take free text the mock cannot invent sensibly; it calls the first function tool.
        tool = next((t for t in request.tools if t.type != "custom"), None) if model == "tools" else None
        words = reply_words(request)
        finish = chat_pb2.FINISH_REASON_STOP
        limit = request.max_completion_tokens or request.max_tokens
        if tool is not None:
            words, finish = [], chat_pb2.FINISH_REASON_TOOL_CALLS
        elif limit and limit < len(words):
            words, finish = words[:limit], chat_pb2.FINISH_REASON_LENGTH
        choices = request.n or 1
        completion_tokens = (len(words) if tool is None else 1) * choices
        prompt_tokens = estimate_prompt_tokens(request)
        usage = chat_pb2.Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        return words, tool, finish, usage

    async def chat(self, model: str, request: chat_pb2.ChatCompletionRequest) -> chat_pb2.ChatCompletion:
        """Answer at once (after ``latency_ms``), or fail as the model name asks."""
        await self._behave(model)
        if model == "stream-break":
            raise stream_broken(self.name, "mock stream-break: the upstream connection broke off")
        words, tool, finish, usage = self._plan(model, request)
        completion = chat_pb2.ChatCompletion(
            id=f"chatcmpl-mock-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            provider=self._label,
            usage=usage,
        )
        for index in range(request.n or 1):
            choice = completion.choices.add(index=index, finish_reason=finish)
            choice.message.role = chat_pb2.ROLE_ASSISTANT
            if tool is None:
                choice.message.text = " ".join(words)
            else:
                choice.message.tool_calls.add(
                    id="call_mock_0",
                    type="function",
                    function=chat_pb2.FunctionCall(name=tool.function.name, arguments="{}"),
                )
        return completion

    async def stream_chat(
        self, model: str, request: chat_pb2.ChatCompletionRequest
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """Stream one word per chunk, then the finish reason, then the usage."""
        delay = await self._behave(model)
        words, tool, finish, usage = self._plan(model, request)
        base = chat_pb2.ChatCompletionChunk(
            id=f"chatcmpl-mock-{uuid.uuid4().hex}", created=int(time.time()), model=model, provider=self._label
        )
        choices = range(request.n or 1)

        def chunk(
            delta: chat_pb2.Delta, finish_reason: chat_pb2.FinishReason.ValueType = chat_pb2.FINISH_REASON_UNSPECIFIED
        ) -> chat_pb2.ChatCompletionChunk:
            out = chat_pb2.ChatCompletionChunk()
            out.CopyFrom(base)
            for index in choices:
                out.choices.add(index=index, delta=delta, finish_reason=finish_reason)
            return out

        if tool is None:
            pieces = [chat_pb2.Delta(content=w if i == 0 else f" {w}") for i, w in enumerate(words)]
        else:
            opening = chat_pb2.ToolCallDelta(index=0, id="call_mock_0", type="function", name=tool.function.name)
            opening.arguments = ""
            pieces = [
                chat_pb2.Delta(tool_calls=[opening]),
                chat_pb2.Delta(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments="{")]),
                chat_pb2.Delta(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments="}")]),
            ]
        if not pieces:
            pieces = [chat_pb2.Delta(content="")]
        pieces[0].role = chat_pb2.ROLE_ASSISTANT
        for sent, piece in enumerate(pieces):
            if sent and delay:
                await self._sleep(delay)
            if model == "stream-break" and sent == _STREAM_BREAK_AFTER:
                raise stream_broken(self.name, "mock stream-break: the upstream connection broke off")
            yield chunk(piece)
        if model == "stream-break":
            raise stream_broken(self.name, "mock stream-break: the upstream connection broke off")
        if delay:
            await self._sleep(delay)
        yield chunk(chat_pb2.Delta(), finish)
        final = chat_pb2.ChatCompletionChunk()
        final.CopyFrom(base)
        final.usage.CopyFrom(usage)
        yield final

    async def embed(self, model: str, request: chat_pb2.EmbeddingRequest) -> chat_pb2.EmbeddingResponse:
        """Deterministic vectors, or the injected failure."""
        await self._behave(model)
        response = chat_pb2.EmbeddingResponse(model=model, provider=self._label)
        for index, text in enumerate(request.input):
            response.data.add(index=index, vector=embedding_vector(text))
        for index, item in enumerate(request.token_inputs):
            # Token ids embed like the text of their decimal ids: deterministic, and distinct per array.
            response.data.add(index=index, vector=embedding_vector(" ".join(map(str, item.tokens))))
        tokens = estimate_embedding_tokens(request)
        response.usage.prompt_tokens = tokens
        response.usage.total_tokens = tokens
        return response

    async def list_models(self) -> list[chat_pb2.Model]:
        """Nothing: mock models are configured or named freely."""
        return []

    async def aclose(self) -> None:
        """Nothing to close."""
