"""A downstream service the router cannot reach is named in plain words, with a Retry-After; the
transport's text (``ipv4:127.0.0.1:50053: Failed to connect…``) goes to the log only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest

from gateway.auth.v1 import auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2_grpc
from gateway.providers.v1 import providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason
from gateway_common.grpc_server import GrpcServer, ServiceRegistration
from services.router.server import build
from suite.supervisor import free_port
from tests.router.test_orchestration import KEY, FakeAuth, FakeMetering, FakeProviders, FakeRateLimit

SERVICES: dict[str, Callable[[], ServiceRegistration]] = {
    "auth": lambda: ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, FakeAuth(), "a"),
    "ratelimit": lambda: ServiceRegistration(
        ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, FakeRateLimit(), "r"
    ),
    "providers": lambda: ServiceRegistration(
        providers_pb2_grpc.add_ProviderServiceServicer_to_server, FakeProviders(), "p"
    ),
    "metering": lambda: ServiceRegistration(
        metering_pb2_grpc.add_MeteringServiceServicer_to_server, FakeMetering(), "m"
    ),
}


@asynccontextmanager
async def router_without(missing: str) -> AsyncIterator[tuple[router_pb2_grpc.RouterServiceAsyncStub, int]]:
    """The real router with fakes behind it, except ``missing``, whose address is a closed port."""
    servers: list[GrpcServer] = []
    addresses: dict[str, dict[str, str]] = {}
    closed = free_port()
    for name, registration in SERVICES.items():
        if name == missing:
            addresses[name] = {"listen": "unused", "address": f"127.0.0.1:{closed}"}
            continue
        server = GrpcServer("127.0.0.1:0", [registration()])
        port = await server.start()
        servers.append(server)
        addresses[name] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    config = GatewayConfig.model_validate(
        {
            "services": {**addresses, "router": {"listen": "127.0.0.1:0", "address": "unused"}},
            "providers": {"p1": {"type": "openai_compatible", "base_url": "http://x"}},
            "router": {"max_attempts": 1},
        }
    )
    app = build(config)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield router_pb2_grpc.RouterServiceStub(channel), closed
    finally:
        await channel.close()
        await app.stop(0)
        for server in servers:
            await server.stop(0)


def _chat() -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        completion=chat_pb2.ChatCompletionRequest(
            model="p1:ok", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")], max_tokens=5
        )
    )


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("auth", "The auth service is unavailable; retry later."),
        ("ratelimit", "The rate limit service is unavailable; retry later."),
        ("providers", "The providers service is unavailable; retry later."),
    ],
)
async def test_an_unreachable_service_is_named_without_its_address(
    missing: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with router_without(missing) as (router, closed_port):
        with caplog.at_level(logging.WARNING), pytest.raises(grpc.aio.AioRpcError) as caught:
            await router.Chat(_chat(), metadata=(("authorization", f"Bearer {KEY}"),))
    error = GatewayError.from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.DEPENDENCY_UNAVAILABLE)
    assert error.message == message
    assert error.retry_after_s is not None and error.retry_after_s >= 1
    everything = f"{caught.value.details()} {error.metadata}"
    assert "ipv4" not in everything and "127.0.0.1" not in everything and str(closed_port) not in everything
    # The operator still gets the transport's own words, in the log.
    assert any(str(closed_port) in record.getMessage() for record in caplog.records)


async def test_transport_failures_of_other_kinds_are_worded_too() -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(_chat(), timeout=0.001, wait_for_ready=True)
    error = GatewayError.from_rpc_error(caught.value, "router")
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # INTERNAL, as before: callers tell a transport deadline from an upstream timeout by it.
    assert (error.reason, error.message) == (Reason.INTERNAL, "The router service did not answer in time.")
    assert GatewayError.from_transport_failure(grpc.StatusCode.UNAVAILABLE, "x").message == (
        "A gateway service is unavailable; retry later."
    )
