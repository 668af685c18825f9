"""Bring-your-own-key: a provider with ``forward_client_key`` and no key of its own sends the
client's key (``x-upstream-authorization`` metadata) upstream, for that call only, and redacts it."""

from __future__ import annotations

import json

import grpc
import pytest

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2
from gateway_common.errors import GatewayError
from tests.providers.conformance import KEY, KEY_ENV, PROVIDER
from tests.providers.harness import provider_service
from tests.providers.replay import ReplayServer, load

REQUEST = chat_pb2.ChatCompletionRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")])
# Not shaped like an sk- key, so only the per-call secret list can redact it.
CLIENT_KEY = "client-upstream-key-5f0c2d9e41"
TARGET = providers_pb2.Target(provider=PROVIDER, model="gpt-4o-mini")


def _entry(url: str, forward: bool) -> dict[str, dict[str, object]]:
    return {
        PROVIDER: {"type": "openai_compatible", "base_url": url, "api_key_env": KEY_ENV, "forward_client_key": forward}
    }


def _metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("x-upstream-authorization", f"Bearer {key}"),)


async def test_the_client_key_reaches_the_upstream_when_none_is_configured(replay: ReplayServer) -> None:
    replay.reply(load("openai/chat.text.json"))
    async with provider_service(_entry(replay.url, True), {}) as stub:
        await stub.Chat(providers_pb2.ChatRequest(target=TARGET, completion=REQUEST), metadata=_metadata(CLIENT_KEY))
    assert replay.requests[-1].header("authorization") == f"Bearer {CLIENT_KEY}"


async def test_a_configured_key_wins_and_forwarding_is_off_by_default(replay: ReplayServer) -> None:
    replay.reply(load("openai/chat.text.json"), load("openai/chat.text.json"))
    async with provider_service(_entry(replay.url, True), {KEY_ENV: KEY}) as stub:
        await stub.Chat(providers_pb2.ChatRequest(target=TARGET, completion=REQUEST), metadata=_metadata(CLIENT_KEY))
    assert replay.requests[-1].header("authorization") == f"Bearer {KEY}"
    async with provider_service(_entry(replay.url, False), {}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Chat(
                providers_pb2.ChatRequest(target=TARGET, completion=REQUEST), metadata=_metadata(CLIENT_KEY)
            )
    # Without forwarding nor a key of its own, only a tenant's credential could serve (none here).
    assert GatewayError.from_rpc_error(raised.value).reason == "MISSING_API_KEY"
    assert len(replay.requests) == 1


async def test_without_a_client_key_the_refusal_names_the_header(replay: ReplayServer) -> None:
    async with provider_service(_entry(replay.url, True), {}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Chat(providers_pb2.ChatRequest(target=TARGET, completion=REQUEST))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "X-Upstream-Authorization" in GatewayError.from_rpc_error(raised.value).message
    assert not replay.requests


async def test_the_client_key_is_redacted_from_upstream_errors(replay: ReplayServer) -> None:
    recording = load("openai/error.401.invalid_api_key.json")
    body = json.loads(recording.body)
    body["error"]["message"] = f"Incorrect API key provided: {CLIENT_KEY}."
    replay.reply(recording.with_body(json.dumps(body).encode()))
    async with provider_service(_entry(replay.url, True), {}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Chat(
                providers_pb2.ChatRequest(target=TARGET, completion=REQUEST), metadata=_metadata(CLIENT_KEY)
            )
    error = GatewayError.from_rpc_error(raised.value)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert CLIENT_KEY not in json.dumps([error.message, error.metadata, raised.value.details()])
    assert "[REDACTED]" in error.message
