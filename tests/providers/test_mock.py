"""The mock provider: deterministic answers, error injection by model name, and stub mode."""

from __future__ import annotations

import grpc
import pytest

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.config import MockProviderConfig
from gateway_common.errors import GatewayError
from gateway_common.openai_wire import parse_chat_request
from gateway_common.tokens import estimate_prompt_tokens
from services.providers.adapters.mock import MockAdapter, embedding_vector
from tests.providers.conformance import from_chunks, from_completion
from tests.providers.harness import chunks_in, provider_service

REQUEST, _ = parse_chat_request(
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is   the capital\nof France?"},
        ]
    }
)
TOOLS_REQUEST, _ = parse_chat_request(
    {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "get_time"}},
        ],
    }
)
REPLY = "Mock reply to: What is the capital of France?"


def _target(model: str, provider: str = "mock") -> providers_pb2.Target:
    return providers_pb2.Target(provider=provider, model=model)


async def _stream(
    stub: providers_pb2_grpc.ProviderServiceStub, model: str, request: chat_pb2.ChatCompletionRequest = REQUEST
) -> list[chat_pb2.ChatCompletionChunk]:
    call = stub.StreamChat(providers_pb2.StreamChatRequest(target=_target(model), completion=request))
    return [chunk async for item in call for chunk in chunks_in(item)]


async def test_the_answer_is_deterministic_and_streams_one_word_per_chunk() -> None:
    async with provider_service({}) as stub:
        first = await stub.Chat(providers_pb2.ChatRequest(target=_target("any-model"), completion=REQUEST))
        second = await stub.Chat(providers_pb2.ChatRequest(target=_target("any-model"), completion=REQUEST))
        chunks = await _stream(stub, "any-model")
    completion = first.completion
    assert completion.choices[0].message.text == REPLY == second.completion.choices[0].message.text
    assert completion.model == "any-model"
    assert completion.usage.prompt_tokens == estimate_prompt_tokens(REQUEST)
    assert completion.usage.completion_tokens == len(REPLY.split())
    assert not completion.usage.estimated
    words = REPLY.split()
    assert [c.choices[0].delta.content for c in chunks[: len(words)]] == [words[0], *(f" {w}" for w in words[1:])]
    assert chunks[0].choices[0].delta.role == chat_pb2.ROLE_ASSISTANT
    streamed = from_chunks(chunks, provider="mock")
    assert streamed.choices[0].text == REPLY
    assert streamed.choices[0].finish_reason == "stop"
    assert streamed.usage == completion.usage


async def test_max_tokens_cuts_the_answer_with_finish_length() -> None:
    request = chat_pb2.ChatCompletionRequest()
    request.CopyFrom(REQUEST)
    request.max_tokens = 3
    async with provider_service({}) as stub:
        response = await stub.Chat(providers_pb2.ChatRequest(target=_target("m"), completion=request))
    choice = response.completion.choices[0]
    assert (choice.message.text, choice.finish_reason) == ("Mock reply to:", chat_pb2.FINISH_REASON_LENGTH)


@pytest.mark.parametrize(
    ("status", "code", "retryable", "upstream_code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT, False, "invalid_request"),
        (401, grpc.StatusCode.UNAUTHENTICATED, False, "invalid_api_key"),
        (403, grpc.StatusCode.PERMISSION_DENIED, False, "permission_denied"),
        (404, grpc.StatusCode.NOT_FOUND, False, "model_not_found"),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED, True, "rate_limit_exceeded"),
        (500, grpc.StatusCode.UNAVAILABLE, True, "mock_error"),
        (503, grpc.StatusCode.UNAVAILABLE, True, "mock_error"),
    ],
)
@pytest.mark.parametrize("call", ["chat", "stream"])
async def test_error_models_raise_what_an_upstream_error_maps_to(
    status: int, code: grpc.StatusCode, retryable: bool, upstream_code: str, call: str
) -> None:
    async with provider_service({}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            if call == "chat":
                await stub.Chat(providers_pb2.ChatRequest(target=_target(f"error-{status}"), completion=REQUEST))
            else:
                await _stream(stub, f"error-{status}")
    error = GatewayError.from_rpc_error(raised.value)
    assert error.code == code
    assert error.reason == "UPSTREAM_ERROR"
    assert error.metadata == {
        "retryable": "true" if retryable else "false",
        "provider": "mock",
        "upstream_status": str(status),
        "upstream_code": upstream_code,
        "upstream_type": error.metadata["upstream_type"],
    }
    assert error.message == f"mock error injected: HTTP {status}"
    assert error.retry_after_s == (1.0 if status == 429 else None)


@pytest.mark.parametrize("call", ["chat", "stream"])
async def test_timeout_model_never_answers_so_the_deadline_fires(call: str) -> None:
    async with provider_service({}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            if call == "chat":
                request = providers_pb2.ChatRequest(target=_target("timeout"), completion=REQUEST)
                await stub.Chat(request, timeout=0.3)
            else:
                stream = providers_pb2.StreamChatRequest(target=_target("timeout"), completion=REQUEST)
                async for _ in stub.StreamChat(stream, timeout=0.3):
                    pass
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_stream_break_sends_three_chunks_then_a_retryable_broken_stream() -> None:
    chunks: list[chat_pb2.ChatCompletionChunk] = []
    async with provider_service({}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            call = stub.StreamChat(providers_pb2.StreamChatRequest(target=_target("stream-break"), completion=REQUEST))
            async for item in call:
                chunks.extend(chunks_in(item))
        with pytest.raises(grpc.aio.AioRpcError) as chat_raised:
            await stub.Chat(providers_pb2.ChatRequest(target=_target("stream-break"), completion=REQUEST))
    assert len(chunks) == 3
    for failure in (raised.value, chat_raised.value):
        error = GatewayError.from_rpc_error(failure)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN")
        assert error.metadata["retryable"] == "true"


async def test_tools_model_calls_the_first_tool() -> None:
    async with provider_service({}) as stub:
        response = await stub.Chat(providers_pb2.ChatRequest(target=_target("tools"), completion=TOOLS_REQUEST))
        chunks = await _stream(stub, "tools", TOOLS_REQUEST)
        plain = await stub.Chat(providers_pb2.ChatRequest(target=_target("tools"), completion=REQUEST))
    for result in (from_completion(response.completion, "mock"), from_chunks(chunks, "mock")):
        choice = result.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert not choice.text
        assert [(c[1], c[2]) for c in choice.tool_calls.values()] == [("get_weather", "{}")]
        assert all(c[0] for c in choice.tool_calls.values())
    assert plain.completion.choices[0].message.text == REPLY


async def test_slow_model_and_configured_latency_wait_between_chunks() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    adapter = MockAdapter("mock", MockProviderConfig(latency_ms=200, chunk_delay_ms=10), sleep=sleep)
    chunks = [c async for c in adapter.stream_chat("slow-50", REQUEST)]
    words = len(REPLY.split())
    assert len(chunks) == words + 2  # the words, the finish reason, the usage
    assert waits == [0.2] + [0.05] * words
    waits.clear()
    [c async for c in adapter.stream_chat("other", REQUEST)]
    assert waits == [0.2] + [0.01] * words


async def test_embeddings_are_deterministic_vectors() -> None:
    embedding = chat_pb2.EmbeddingRequest(input=["alpha", "beta", "alpha"])
    async with provider_service({}) as stub:
        response = await stub.Embed(providers_pb2.EmbedRequest(target=_target("emb"), embedding=embedding))
    vectors = [list(item.vector) for item in response.embedding.data]
    assert [len(v) for v in vectors] == [8, 8, 8]
    assert vectors[0] == vectors[2] != vectors[1]
    assert vectors[0] == pytest.approx(embedding_vector("alpha"))
    assert response.embedding.usage.prompt_tokens > 0
    assert response.embedding.provider == "mock"


@pytest.mark.parametrize("kind", ["openai", "azure", "openai_compatible"])
async def test_a_stub_provider_answers_like_the_mock_and_says_so(kind: str) -> None:
    providers = {"fake": {"type": kind, "stub": True, "base_url": "http://127.0.0.1:9/unused"}}
    async with provider_service(providers, env={}) as stub:
        response = await stub.Chat(providers_pb2.ChatRequest(target=_target("gpt-4o", "fake"), completion=REQUEST))
        call = stub.StreamChat(providers_pb2.StreamChatRequest(target=_target("gpt-4o", "fake"), completion=REQUEST))
        chunks = [chunk async for item in call for chunk in chunks_in(item)]
    assert response.completion.provider == "fake (stub)"
    assert response.completion.choices[0].message.text == REPLY
    assert from_chunks(chunks, provider="fake (stub)").choices[0].text == REPLY
