"""The router and the real providers service in-process, in front of the fault-injecting upstream.

Auth, ratelimit and metering are the router tests' fakes: the fake metering service is the ledger
these tests read (every usage event the router ships to it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import GrpcServer, ServiceRegistration
from services.providers.server import build as build_providers
from services.router.server import build as build_router
from tests.failover.upstream import FaultyUpstream
from tests.router.test_orchestration import KEY, FakeAuth, FakeMetering, FakeRateLimit, _until

ATTEMPT_TIMEOUT_S = 1.0
FIRST_CONTENT_TIMEOUT_S = 0.5
# Long enough that a loaded CI machine (two cores, several suites) does not stall a healthy stream.
STREAM_IDLE_TIMEOUT_S = 1.5

# One alias per scenario: its deployments, in order (all on the one faulty upstream).
MODELS: dict[str, list[dict[str, Any]]] = {
    "ra-same": [{"model": "ratelimited-after"}],
    "ra-elsewhere": [{"model": "ratelimited-long"}, {"model": "ok"}],
    "rl-elsewhere": [{"model": "ratelimited"}, {"model": "ok"}],
    "once": [{"model": "error-once"}, {"model": "ok"}],
    "persistent": [{"model": "unavailable"}, {"model": "ok"}],
    "reset": [{"model": "reset-once"}, {"model": "ok"}],
    "blackhole": [{"model": "blackhole"}, {"model": "ok"}],
    "slow-within": [{"model": "slow-200"}, {"model": "ok"}],
    "slow-beyond": [{"model": "slow-3000"}, {"model": "ok"}],
    "cut": [{"model": "cut"}, {"model": "ok"}],
    "stall": [{"model": "stall"}, {"model": "ok"}],
    "roleonly": [{"model": "roleonly-stall"}, {"model": "ok"}],
    "malformed": [{"model": "malformed"}, {"model": "ok"}],
    "nodone": [{"model": "nodone"}],
    "toolong": [{"model": "toolong", "context_window": 1000}, {"model": "ok", "context_window": 200000}],
    "toolong-only": [{"model": "toolong", "context_window": 1000}],
    "filtered": [{"model": "filtered"}, {"model": "ok"}],
    "rejects": [{"model": "unavailable"}, {"model": "rejects"}],
    "flapping": [{"model": "flapping"}],
    "toolcut": [{"model": "toolcut"}, {"model": "ok"}],
    "cut-rejects": [{"model": "cut"}, {"model": "rejects"}],
    "cut-vllm": [{"model": "cut"}, {"provider": "vllm", "model": "ok"}],
    "priced": [
        {"model": "cut", "input_usd_per_million": 1_000_000, "output_usd_per_million": 1_000_000},
        {"model": "ok", "input_usd_per_million": 2_000_000, "output_usd_per_million": 2_000_000},
    ],
}


@dataclass
class Rig:
    """The router stub, the upstream and the ledger."""

    router: router_pb2_grpc.RouterServiceAsyncStub
    upstream: FaultyUpstream
    ledger: FakeMetering
    router_address: str

    async def event(self, request_id: str) -> metering_pb2.UsageEvent:
        """The final usage event of ``request_id`` once it reached the ledger."""
        await _until(lambda: any(e.request_id == request_id for e in self.ledger.events))
        return [e for e in self.ledger.events if e.request_id == request_id][-1]


def request(model: str, **fields: Any) -> chat_pb2.ChatCompletionRequest:
    """A small chat request for alias ``model``."""
    return chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Say the pangram.")], **fields
    )


NO_CONTINUE_KEY = "sk-test-no-continuation"
"""A key of a tenant whose policy disables the continuation of broken streams."""


class TenantAuth(FakeAuth):
    """The router tests' auth, plus a tenant that turned continuation off."""

    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, context: Any) -> auth_pb2.AuthenticateResponse:
        if request.api_key != NO_CONTINUE_KEY:
            return await super().Authenticate(request, context)
        principal = auth_pb2.Principal(
            tenant_id="t-strict",
            key_id="k-strict",
            scopes=["chat"],
            policy=auth_pb2.Policy(continue_broken_streams=False),
        )
        return auth_pb2.AuthenticateResponse(principal=principal, cache_ttl_seconds=2)


def metadata(request_id: str, key: str = KEY) -> tuple[tuple[str, str], ...]:
    """The caller's key and a request id for the ledger."""
    return (("authorization", f"Bearer {key}"), ("x-request-id", request_id))


class Clock:
    """Wall time of one call, for the timing assertions."""

    def __enter__(self) -> Clock:
        self.started = time.monotonic()
        self.elapsed = 0.0
        return self

    def __exit__(self, *_: object) -> None:
        self.elapsed = time.monotonic() - self.started


def router_config(tmp_path: Path, upstream: FaultyUpstream, addresses: dict[str, dict[str, str]]) -> GatewayConfig:
    """The gateway config for the scenarios."""
    return GatewayConfig.model_validate(
        {
            "services": {**addresses, "router": {"listen": "127.0.0.1:0", "address": "unused"}},
            "providers": {
                "up": {
                    "type": "openai_compatible",
                    "base_url": upstream.base_url,
                    "read_timeout_s": ATTEMPT_TIMEOUT_S * 2,
                    "stream_idle_timeout_s": STREAM_IDLE_TIMEOUT_S,
                },
                # The same upstream, declared as a vLLM server that extends a final assistant message.
                "vllm": {
                    "type": "openai_compatible",
                    "base_url": upstream.base_url,
                    "read_timeout_s": ATTEMPT_TIMEOUT_S * 2,
                    "stream_idle_timeout_s": STREAM_IDLE_TIMEOUT_S,
                    "continue_final_message": True,
                },
            },
            "models": {
                alias: {"deployments": [{"provider": "up", **d} for d in deployments]}
                for alias, deployments in MODELS.items()
            },
            "router": {
                "max_attempts": 3,
                "retries_per_deployment": 1,
                "retry_backoff_s": 0.01,
                "attempt_timeout_s": ATTEMPT_TIMEOUT_S,
                "first_content_timeout_s": FIRST_CONTENT_TIMEOUT_S,
                "max_retry_wait_s": 2.0,
                "unhealthy_after_failures": 1000,
            },
            "metering": {"flush_interval_s": 0.05, "spool_path": str(tmp_path / "usage-spool.db")},
        }
    )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A fresh upstream, providers service and router per test (no state carried between scenarios)."""
    upstream = FaultyUpstream()
    await upstream.start()
    ledger = FakeMetering()
    fakes = {
        "auth": ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, TenantAuth(), "a"),
        "ratelimit": ServiceRegistration(
            ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, FakeRateLimit(), "r"
        ),
        "metering": ServiceRegistration(metering_pb2_grpc.add_MeteringServiceServicer_to_server, ledger, "m"),
    }
    servers: list[GrpcServer] = []
    addresses: dict[str, dict[str, str]] = {}
    for name, registration in fakes.items():
        server = GrpcServer("127.0.0.1:0", [registration])
        port = await server.start()
        servers.append(server)
        addresses[name] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    providers = build_providers(router_config(tmp_path, upstream, addresses), listen="127.0.0.1:0", env={})
    port = await providers.start()
    addresses["providers"] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    app = build_router(router_config(tmp_path, upstream, addresses))
    router_port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{router_port}")
    try:
        yield Rig(router_pb2_grpc.RouterServiceStub(channel), upstream, ledger, f"127.0.0.1:{router_port}")
    finally:
        await channel.close()
        await app.stop(0)
        await upstream.stop()
        await providers.stop(0)
        for server in servers:
            await server.stop(0)
