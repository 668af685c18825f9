"""End to end over gRPC (how internal services call the router), and the compose topology as processes."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import grpc
import openai
import pytest

from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.errors import GatewayError, Reason
from suite.supervisor import Suite, free_port
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e


def _hello() -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model="mock:demo", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Hi from a service")]
    )


async def test_internal_service_calls_the_router(gateway: Gateway) -> None:
    # As an internal service would: TLS verified against the gateway's CA, no client certificate.
    async with gateway.suite.channel("router", identity=None) as channel:
        router = router_pb2_grpc.RouterServiceStub(channel)
        metadata = (("authorization", f"Bearer {gateway.key}"),)
        reply = await router.Chat(router_pb2.ChatRequest(completion=_hello()), metadata=metadata)
        assert reply.completion.choices[0].message.text
        assert reply.completion.provider == "mock"
        chunks = [
            item.chunk
            async for item in router.StreamChat(router_pb2.StreamChatRequest(completion=_hello()), metadata=metadata)
        ]
        assert "".join(c.choices[0].delta.content for c in chunks if c.choices)
        assert chunks[-1].usage.total_tokens > 0
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await router.Chat(router_pb2.ChatRequest(completion=_hello()), metadata=(("authorization", "Bearer x"),))
        error = GatewayError.from_rpc_error(info.value)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED and error.reason == Reason.INVALID_API_KEY


def test_topology_with_redis_and_postgres(tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    """The deployment's shape (Redis counters, PostgreSQL keys and ledger) run as local processes."""
    key = f"gw-{secrets.token_urlsafe(32)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    # A day window: a minute window could roll over between the requests.
    config = tmp_path / "gateway.yaml"
    config.write_text("limits:\n  requests_per_minute: 0\n  requests_per_day: 3\n")
    env.update(
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": postgres_url,
            "GATEWAY_TENANT_KEYS": f"acme:{key}",
            "GATEWAY_CONFIG": str(config),
        }
    )
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=tmp_path, ports=ports, env=env)
    suite.start()
    try:
        client = openai.OpenAI(base_url=f"{suite.edge_url}/v1", api_key=key, max_retries=0)
        for _ in range(3):
            reply = client.chat.completions.create(model="mock:demo", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="mock:demo", messages=[{"role": "user", "content": "hi"}])
        # The shared state lives in Redis and PostgreSQL; the one SQLite file is the router's own
        # usage spool, local by design (events wait there until metering acknowledged them).
        assert [path.name for path in tmp_path.rglob("*.db")] == ["router-usage-spool.db"]
    finally:
        suite.stop()


async def test_a_batched_stream_carries_the_same_chunks_in_fewer_messages(gateway: Gateway) -> None:
    # What the edge asks for: chunks that are ready together share a message, none is lost or reordered.
    async with gateway.suite.channel("router", identity=None) as channel:
        router = router_pb2_grpc.RouterServiceStub(channel)
        metadata = (("authorization", f"Bearer {gateway.key}"),)
        plain = [
            item.chunk
            async for item in router.StreamChat(router_pb2.StreamChatRequest(completion=_hello()), metadata=metadata)
        ]
        messages = [
            item
            async for item in router.StreamChat(
                router_pb2.StreamChatRequest(completion=_hello(), batch_chunks=True), metadata=metadata
            )
        ]
    batched = [chunk for item in messages for chunk in (item.chunk, *item.more_chunks)]

    def text(chunks: list[chat_pb2.ChatCompletionChunk]) -> str:
        return "".join(c.choices[0].delta.content for c in chunks if c.choices)

    assert text(batched) == text(plain) and text(plain)
    assert len(batched) == len(plain)
    assert batched[-1].usage.total_tokens == plain[-1].usage.total_tokens > 0
    assert len(messages) <= len(batched)
