"""An OpenAI-protocol upstream misbehaving: cut, malformed, silent streams, and a client that leaves.

Each runs through the real providers service against the replay server. None of them may end
like a complete answer: the caller gets an error it can act on (retryable), and the upstream
connection is closed when the gateway stops reading.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import pytest

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.config import HttpProviderConfig
from gateway_common.errors import GatewayError
from services.providers.adapters.openai import OpenAIAdapter
from tests.providers.conformance import KEY, KEY_ENV, PROVIDER, from_chunks
from tests.providers.harness import chunks_in, provider_service
from tests.providers.replay import Recording, ReplayServer, Reply, load
from tests.servers import free_port

TEXT_STREAM = "openai/chat.stream.text.include_usage.sse"
ENV = {KEY_ENV: KEY}
REQUEST = chat_pb2.ChatCompletionRequest(
    messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="What's the weather like in SF?")]
)
TARGET = providers_pb2.Target(provider=PROVIDER, model="gpt-4o")


def _entry(base_url: str, **config: Any) -> dict[str, dict[str, Any]]:
    return {PROVIDER: {"type": "openai", "base_url": base_url, "api_key_env": KEY_ENV, **config}}


async def _failed_stream(
    stub: providers_pb2_grpc.ProviderServiceStub,
) -> tuple[list[chat_pb2.ChatCompletionChunk], GatewayError]:
    chunks: list[chat_pb2.ChatCompletionChunk] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for item in stub.StreamChat(providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST)):
            chunks.extend(chunks_in(item))
    return chunks, GatewayError.from_rpc_error(raised.value)


def _replace_event(recording: Recording, old: bytes, new: bytes) -> Recording:
    body = recording.body.replace(old, new, 1)
    assert body != recording.body
    return recording.with_body(body)


def _assert_error(error: GatewayError, code: grpc.StatusCode, reason: str) -> None:
    assert (error.code, error.reason) == (code, reason), error
    assert error.metadata["retryable"] == "true"
    assert error.metadata["provider"] == PROVIDER
    assert KEY not in error.message


async def test_a_stream_cut_mid_body_is_an_error_not_an_end(replay: ReplayServer) -> None:
    replay.reply(Reply(load(TEXT_STREAM), cut_after=5))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        chunks, error = await _failed_stream(stub)
    assert len(chunks) == 5  # what arrived was passed on before the failure
    _assert_error(error, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN")


async def test_a_stream_ending_cleanly_without_done_before_its_finish_is_an_error(replay: ReplayServer) -> None:
    recording = load(TEXT_STREAM)
    body = recording.body
    cut = body.index(b'data: {"id"', body.index(b'"finish_reason":"stop"') - 400)
    replay.reply(recording.with_body(body[:cut]))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        chunks, error = await _failed_stream(stub)
    assert chunks and not any(c.HasField("usage") and c.usage.estimated for c in chunks)
    _assert_error(error, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN")
    assert "[DONE]" in error.message


async def test_a_stream_closing_without_done_after_its_finish_is_complete(replay: ReplayServer) -> None:
    # The end of an answer is recognised by its content: finish_reason and usage came, [DONE] did not.
    replay.reply(_replace_event(load(TEXT_STREAM), b"data: [DONE]\n\n", b""))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        stream = stub.StreamChat(providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST))
        chunks = [chunk async for item in stream for chunk in chunks_in(item)]
    assert chunks[-1].usage.total_tokens == 44 and not chunks[-1].usage.estimated
    assert any(c.choices and c.choices[0].finish_reason == chat_pb2.FINISH_REASON_STOP for c in chunks)


async def test_a_malformed_chunk_is_an_error(replay: ReplayServer) -> None:
    recording = load(TEXT_STREAM)
    third = recording.body.split(b"\n\n")[2] + b"\n\n"
    replay.reply(_replace_event(recording, third, b'data: {"id": "chatcmpl-x", "choices": [\n\n'))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        chunks, error = await _failed_stream(stub)
    assert len(chunks) == 2
    _assert_error(error, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN")


async def test_an_error_sent_inside_the_stream_keeps_its_message(replay: ReplayServer) -> None:
    recording = load(TEXT_STREAM)
    third = recording.body.split(b"\n\n")[2] + b"\n\n"
    in_stream = b'data: {"error": {"message": "The server had an error", "type": "server_error", "code": null}}\n\n'
    replay.reply(_replace_event(recording, third, in_stream))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        _, error = await _failed_stream(stub)
    _assert_error(error, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_ERROR")
    assert error.message == "The server had an error"
    assert error.metadata["upstream_code"] == "server_error"


async def test_a_silent_stream_hits_the_idle_timeout_and_is_closed(replay: ReplayServer) -> None:
    replay.reply(Reply(load(TEXT_STREAM), hang_after=3))
    async with provider_service(_entry(f"{replay.url}/v1", stream_idle_timeout_s=0.2), ENV) as stub:
        chunks, error = await _failed_stream(stub)
    assert len(chunks) == 3
    _assert_error(error, grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
    await asyncio.wait_for(replay.disconnected.wait(), 10)


async def test_an_upstream_that_never_answers_hits_the_read_timeout(replay: ReplayServer) -> None:
    replay.reply(Reply(load("openai/chat.text.json"), silent=True))
    async with provider_service(_entry(f"{replay.url}/v1", read_timeout_s=0.2), ENV) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Chat(providers_pb2.ChatRequest(target=TARGET, completion=REQUEST))
    _assert_error(GatewayError.from_rpc_error(raised.value), grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")


async def test_a_refused_connection_is_retryable_unavailable() -> None:
    async with provider_service(_entry(f"http://127.0.0.1:{free_port()}/v1"), ENV) as stub:
        chunks, error = await _failed_stream(stub)
    assert not chunks
    _assert_error(error, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_ERROR")


@pytest.mark.parametrize("how", ["cancel", "deadline"])
async def test_a_caller_leaving_closes_the_upstream_request(replay: ReplayServer, how: str) -> None:
    replay.reply(Reply(load(TEXT_STREAM), hang_after=4))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        request = providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST)
        if how == "cancel":
            call = stub.StreamChat(request)
            received: list[chat_pb2.ChatCompletionChunk] = []
            while len(received) < 2:  # chunks that were ready together share a message
                item = await call.read()
                assert isinstance(item, providers_pb2.StreamChatResponse)
                received.extend(chunks_in(item))
            call.cancel()
        else:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in stub.StreamChat(request, timeout=0.5):
                    pass
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(replay.disconnected.wait(), 10)


async def test_streams_reuse_the_upstream_connection(replay: ReplayServer) -> None:
    replay.reply(load(TEXT_STREAM), load(TEXT_STREAM), load("openai/chat.text.json"))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        for _ in range(2):
            chunks = [
                chunk
                async for item in stub.StreamChat(providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST))
                for chunk in chunks_in(item)
            ]
            from_chunks(chunks)
        await stub.Chat(providers_pb2.ChatRequest(target=TARGET, completion=REQUEST))
    assert len(replay.requests) == 3
    assert replay.connections == 1


async def test_closing_the_adapter_stream_between_chunks_closes_the_upstream_request(replay: ReplayServer) -> None:
    # The gRPC cancellation above interrupts a pending read; this is the other path: the consumer
    # stops iterating while the adapter waits at a yield (it is closed, not cancelled).
    replay.reply(Reply(load(TEXT_STREAM), hang_after=4))
    config = HttpProviderConfig(type="openai", stream_idle_timeout_s=30)
    adapter = OpenAIAdapter(PROVIDER, config, KEY, f"{replay.url}/v1")
    try:
        stream = adapter.stream_chat("gpt-4o", REQUEST)
        assert isinstance(stream, AsyncGenerator)
        await anext(stream)
        await anext(stream)
        await stream.aclose()
        await asyncio.wait_for(replay.disconnected.wait(), 10)
    finally:
        await adapter.aclose()


async def test_total_timeout_bounds_a_slow_stream_and_a_slow_answer(replay: ReplayServer) -> None:
    # Events keep coming (no idle timeout), but the whole exchange outlives total_timeout_s.
    replay.reply(Reply(load(TEXT_STREAM), delay_s=0.1), Reply(load("openai/chat.text.json"), silent=True))
    async with provider_service(_entry(f"{replay.url}/v1", total_timeout_s=0.3), ENV) as stub:
        chunks, streamed = await _failed_stream(stub)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Chat(providers_pb2.ChatRequest(target=TARGET, completion=REQUEST))
    assert chunks
    for error in (streamed, GatewayError.from_rpc_error(raised.value)):
        _assert_error(error, grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
        assert "0.3s" in error.message


async def test_usage_sent_with_every_chunk_reaches_the_caller_once_at_the_end(replay: ReplayServer) -> None:
    # Some servers (vLLM's continuous usage stats) attach usage to every chunk; the canonical
    # stream carries it once, in a final chunk without choices, with the latest numbers.
    recording = load(TEXT_STREAM)
    running = b'"system_fingerprint":"fp_5050236cbd","usage":{"prompt_tokens":14,"completion_tokens":1},'
    body = recording.body.replace(b'"system_fingerprint":"fp_5050236cbd",', running)
    replay.reply(recording.with_body(body))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        request = providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST)
        chunks = [chunk async for item in stub.StreamChat(request) for chunk in chunks_in(item)]
    with_usage = [c for c in chunks if c.HasField("usage")]
    assert with_usage == [chunks[-1]] and not chunks[-1].choices
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (14, 30)
    assert from_chunks(chunks).choices[0].finish_reason == "stop"


async def test_a_completion_with_tool_calls_finished_stop_and_no_usage_is_normalised(replay: ReplayServer) -> None:
    # Ollama's non-streamed shape: tool calls with finish_reason "stop" and no usage.
    recording = load("openai/chat.tool_calls.parallel.json")
    data = recording.json()
    data["choices"][0]["finish_reason"] = "stop"
    del data["usage"]
    replay.reply(recording.with_body(json.dumps(data).encode()))
    async with provider_service(_entry(f"{replay.url}/v1"), ENV) as stub:
        response = await stub.Chat(providers_pb2.ChatRequest(target=TARGET, completion=REQUEST))
    completion = response.completion
    assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert len(completion.choices[0].message.tool_calls) == 2
    assert completion.usage.estimated and completion.usage.completion_tokens > 0
