"""Keyless requests through the router over real gRPC, against the fakes of test_orchestration:
off by default (401), and when enabled served as the anonymous tenant, one caller per client id
or per address, metered under ``client:<id>`` / ``ip:<addr>``, never granted usage reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2_grpc
from gateway.providers.v1 import providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import GrpcServer, ServiceRegistration
from services.router.server import build
from tests.router.test_orchestration import KEY, FakeAuth, FakeMetering, FakeProviders, FakeRateLimit, Rig


@asynccontextmanager
async def _router(tmp_path: Path, anonymous: dict[str, Any] | None) -> AsyncIterator[Rig]:
    auth, ratelimit, providers, metering = FakeAuth(), FakeRateLimit(), FakeProviders(), FakeMetering()
    registrations = {
        "auth": ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, auth, "a"),
        "ratelimit": ServiceRegistration(ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, ratelimit, "r"),
        "providers": ServiceRegistration(providers_pb2_grpc.add_ProviderServiceServicer_to_server, providers, "p"),
        "metering": ServiceRegistration(metering_pb2_grpc.add_MeteringServiceServicer_to_server, metering, "m"),
    }
    servers: list[GrpcServer] = []
    addresses: dict[str, dict[str, str]] = {}
    for name, registration in registrations.items():
        server = GrpcServer("127.0.0.1:0", [registration])
        port = await server.start()
        servers.append(server)
        addresses[name] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    data: dict[str, Any] = {
        "services": {**addresses, "router": {"listen": "127.0.0.1:0", "address": "unused"}},
        "providers": {"p1": {"type": "openai_compatible", "base_url": "http://x"}},
        "metering": {"flush_interval_s": 0.05, "spool_path": str(tmp_path / "usage-spool.db")},
    }
    if anonymous is not None:
        data["anonymous"] = anonymous
    app = build(GatewayConfig.model_validate(data))
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Rig(router_pb2_grpc.RouterServiceStub(channel), auth, ratelimit, providers, metering)
    finally:
        await channel.close()
        await app.stop(0)
        for server in servers:
            await server.stop(0)


def _chat(client_id: str = "") -> router_pb2.ChatRequest:
    request = chat_pb2.ChatCompletionRequest(
        model="p1:ok", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")], max_tokens=5
    )
    request.gateway.client_id = client_id
    return router_pb2.ChatRequest(completion=request)


async def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    return info.value.code()


async def test_off_by_default_a_client_id_without_a_key_is_unauthenticated(tmp_path: Path) -> None:
    async with _router(tmp_path, None) as rig:
        assert await _code(lambda: rig.router.Chat(_chat("dev-local-1"))) == grpc.StatusCode.UNAUTHENTICATED
        assert rig.ratelimit.acquired == [] and rig.providers.attempts == []


async def test_enabled_each_caller_is_limited_and_metered_apart(tmp_path: Path) -> None:
    async with _router(tmp_path, {"enabled": True, "requests_per_minute": 20}) as rig:
        await rig.router.Chat(_chat("dev-local-1"))
        # The edge names the HTTP client's address; without a client id, that is the caller.
        await rig.router.Chat(_chat(), metadata=(("x-gateway-client-ip", "198.51.100.4"),))
        # A direct gRPC caller without either: its peer address.
        await rig.router.Chat(_chat())
        callers = [[e.value for e in a.limits[-1].descriptor.entries] for a in rig.ratelimit.acquired]
        assert callers == [
            ["anonymous", "client:dev-local-1"],
            ["anonymous", "ip:198.51.100.4"],
            ["anonymous", "ip:127.0.0.1"],
        ]
        assert [a.limits[-1].quotas[0].limit for a in rig.ratelimit.acquired] == [20, 20, 20]
        assert rig.auth.calls == 0
        async with asyncio.timeout(5):
            while len({e.event_id for e in rig.metering.events if e.outcome}) < 3:
                await asyncio.sleep(0.02)
        metered = {(e.tenant_id, e.key_id) for e in rig.metering.events if e.outcome}
        assert metered == {
            ("anonymous", "client:dev-local-1"),
            ("anonymous", "ip:198.51.100.4"),
            ("anonymous", "ip:127.0.0.1"),
        }


async def test_enabled_a_key_still_wins_and_usage_still_needs_one(tmp_path: Path) -> None:
    async with _router(tmp_path, {"enabled": True}) as rig:
        await rig.router.Chat(_chat("dev-local-1"), metadata=(("authorization", f"Bearer {KEY}"),))
        assert [e.value for e in rig.ratelimit.acquired[-1].limits[-1].descriptor.entries] == ["t1", "k1"]
        wrong = (("authorization", "Bearer wrong"),)
        assert await _code(lambda: rig.router.Chat(_chat("dev-local-1"), metadata=wrong)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert await _code(lambda: rig.router.GetUsage(router_pb2.GetUsageRequest())) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
