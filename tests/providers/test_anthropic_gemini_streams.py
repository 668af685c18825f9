"""Anthropic and Gemini upstreams misbehaving (cut, unterminated, abandoned streams) and the calls
no recording covers (Gemini embeddings), through the real providers service and the replay server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.errors import GatewayError
from gateway_common.openai_wire import parse_embedding_request
from tests.providers.conformance import KEY, KEY_ENV, PROVIDER
from tests.providers.harness import chunks_in, provider_service
from tests.providers.replay import Recording, ReplayServer, Reply, load

ENV = {KEY_ENV: KEY}
REQUEST = chat_pb2.ChatCompletionRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Weather in SF?")])
ANTHROPIC_TOOL_STREAM = "anthropic/messages.stream.tool_use.sse"
GEMINI_TEXT_STREAM = "gemini/streamGenerateContent.alt-sse.text.sse"


def _entry(kind: str, base_url: str, **config: Any) -> dict[str, dict[str, Any]]:
    return {PROVIDER: {"type": kind, "base_url": base_url, "api_key_env": KEY_ENV, **config}}


async def _failed_stream(
    stub: providers_pb2_grpc.ProviderServiceStub, model: str
) -> tuple[list[chat_pb2.ChatCompletionChunk], GatewayError]:
    chunks: list[chat_pb2.ChatCompletionChunk] = []
    target = providers_pb2.Target(provider=PROVIDER, model=model)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for item in stub.StreamChat(providers_pb2.StreamChatRequest(target=target, completion=REQUEST)):
            chunks.extend(chunks_in(item))
    return chunks, GatewayError.from_rpc_error(raised.value)


def _assert_broken(chunks: list[chat_pb2.ChatCompletionChunk], error: GatewayError) -> None:
    assert chunks, "what arrived before the failure is passed on"
    assert not any(c.HasField("usage") for c in chunks), "a broken stream must not look complete"
    assert not any(choice.finish_reason for c in chunks for choice in c.choices)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN"), error
    assert error.metadata["retryable"] == "true"
    assert error.metadata["provider"] == PROVIDER


def _without_last_events(recording: Recording, count: int) -> Recording:
    events = recording.body.replace(b"\r\n", b"\n").split(b"\n\n")
    events = [e for e in events if e.strip()]
    return recording.with_body(b"\n\n".join(events[:-count]) + b"\n\n")


@pytest.mark.parametrize(
    ("kind", "model", "reply"),
    [
        ("anthropic", "claude-haiku-4-5", Reply(load(ANTHROPIC_TOOL_STREAM), cut_after=6)),
        ("anthropic", "claude-haiku-4-5", Reply(_without_last_events(load(ANTHROPIC_TOOL_STREAM), 1))),
        ("gemini", "gemini-2.0-flash-exp", Reply(load(GEMINI_TEXT_STREAM), cut_after=2)),
        ("gemini", "gemini-2.0-flash-exp", Reply(_without_last_events(load(GEMINI_TEXT_STREAM), 1))),
    ],
    ids=["anthropic-cut", "anthropic-no-message-stop", "gemini-cut", "gemini-no-finish-reason"],
)
async def test_an_incomplete_stream_is_an_error_not_an_end(
    replay: ReplayServer, kind: str, model: str, reply: Reply
) -> None:
    replay.reply(reply)
    async with provider_service(_entry(kind, replay.url), ENV) as stub:
        chunks, error = await _failed_stream(stub, model)
    _assert_broken(chunks, error)


@pytest.mark.parametrize(
    ("kind", "model", "recording"),
    [("anthropic", "claude-haiku-4-5", ANTHROPIC_TOOL_STREAM), ("gemini", "gemini-2.0-flash-exp", GEMINI_TEXT_STREAM)],
)
async def test_a_caller_leaving_closes_the_upstream_request(
    replay: ReplayServer, kind: str, model: str, recording: str
) -> None:
    replay.reply(Reply(load(recording), hang_after=2))
    async with provider_service(_entry(kind, replay.url), ENV) as stub:
        target = providers_pb2.Target(provider=PROVIDER, model=model)
        call = stub.StreamChat(providers_pb2.StreamChatRequest(target=target, completion=REQUEST))
        first = await call.read()
        assert isinstance(first, providers_pb2.StreamChatResponse)
        assert first.chunk.choices[0].delta.role == chat_pb2.ROLE_ASSISTANT
        call.cancel()
        await asyncio.wait_for(replay.disconnected.wait(), 10)


async def test_gemini_embeddings(replay: ReplayServer) -> None:
    # No recording of batchEmbedContents exists in the fixtures: this body follows the API reference.
    body = b'{"embeddings": [{"values": [0.25, -0.5, 1.0]}, {"values": [0.125, 0.0, -2.0]}]}'
    replay.reply(Recording("synthetic/batchEmbedContents", 200, (("content-type", "application/json"),), body))
    request, _ = parse_embedding_request({"input": ["hello", "world"], "dimensions": 3})
    async with provider_service(_entry("gemini", replay.url), ENV) as stub:
        target = providers_pb2.Target(provider=PROVIDER, model="models/text-embedding-004")
        response = await stub.Embed(providers_pb2.EmbedRequest(target=target, embedding=request))
    embedding = response.embedding
    assert [list(item.vector) for item in embedding.data] == [[0.25, -0.5, 1.0], [0.125, 0.0, -2.0]]
    assert embedding.model == "text-embedding-004" and embedding.provider == PROVIDER
    assert embedding.usage.estimated and embedding.usage.prompt_tokens > 0
    [sent] = replay.requests
    assert (sent.method, sent.path) == ("POST", "/v1beta/models/text-embedding-004:batchEmbedContents")
    assert sent.header("x-goog-api-key") == KEY
    assert sent.body == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": text}]}, "outputDimensionality": 3}
            for text in ("hello", "world")
        ]
    }
