"""A revoked key fails on every router replica within 5 s: the real auth, ratelimit, providers and
metering services in-process, and two routers in front of them, all over real gRPC on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason
from gateway_common.grpc_server import ServiceApp
from services.auth.server import build as build_auth
from services.auth.settings import AuthSecrets
from services.metering.server import build as build_metering
from services.providers.server import build as build_providers
from services.ratelimit.server import build as build_ratelimit
from services.router.server import build as build_router

ADMIN_KEY = "gw-integration-admin-key-0123456789abcdef"
LOOPBACK = "127.0.0.1:0"
REVOCATION_BOUND_S = 5.0


@dataclass
class Stack:
    """Two routers over one set of real backend services, and a channel to the auth service."""

    auth: auth_pb2_grpc.AuthServiceAsyncStub
    routers: list[router_pb2_grpc.RouterServiceAsyncStub]


def _config(folder: Path, **extra: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "auth": {
                "database_url": f"sqlite+aiosqlite:///{folder / 'auth.db'}",
                "demo_key_file": str(folder / "demo-key"),
            },
            "metering": {"database_url": f"sqlite+aiosqlite:///{folder / 'metering.db'}"},
            # Polling must meet the revocation, not a rate limit.
            "limits": {"requests_per_minute": 100_000},
            **extra,
        }
    )


async def _started(stack: AsyncExitStack, app: ServiceApp) -> str:
    try:
        port = await app.start()
    except BaseException:
        await app.stop(0)
        raise
    stack.push_async_callback(app.stop, 0)
    return f"127.0.0.1:{port}"


async def _channel(stack: AsyncExitStack, address: str) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(address)
    stack.push_async_callback(channel.close, None)
    return channel


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The suite in-process; the exit stack stops it in reverse order (routers first)."""
    base = _config(tmp_path)
    async with AsyncExitStack() as exits:
        # The SQL-backed services start one after the other: each runs its migrations at start.
        auth = await _started(exits, build_auth(base, listen=LOOPBACK, secrets=AuthSecrets(admin_key=ADMIN_KEY)))
        metering = await _started(exits, build_metering(base, listen=LOOPBACK))
        # The rate limiter rebuilds its counters from this metering's ledger before it serves.
        ledger = {"metering": {"listen": LOOPBACK, "address": metering}}
        ratelimit = await _started(exits, build_ratelimit(_config(tmp_path, services=ledger), listen=LOOPBACK))
        providers = await _started(exits, build_providers(base, listen=LOOPBACK, env={}))
        addresses = {"auth": auth, "metering": metering, "ratelimit": ratelimit, "providers": providers}
        router_config = _config(
            tmp_path,
            services={name: {"listen": LOOPBACK, "address": address} for name, address in addresses.items()},
        )
        # Each router has a usage spool of its own: a spool is locked to one process.
        routers = [
            await _started(
                exits,
                build_router(
                    router_config.model_copy(
                        update={
                            "metering": router_config.metering.model_copy(
                                update={"spool_path": str(tmp_path / f"router-{index}-spool.db")}
                            )
                        }
                    ),
                    listen=LOOPBACK,
                ),
            )
            for index in range(2)
        ]
        yield Stack(
            auth=auth_pb2_grpc.AuthServiceStub(await _channel(exits, auth)),
            routers=[router_pb2_grpc.RouterServiceStub(await _channel(exits, r)) for r in routers],
        )


def _hello() -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        completion=chat_pb2.ChatCompletionRequest(
            model="mock:demo", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Hello, replicas")]
        )
    )


def _bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def _seconds_until_refused(router: router_pb2_grpc.RouterServiceAsyncStub, key: str, limit_s: float) -> float:
    """Seconds until ``router`` answers UNAUTHENTICATED for ``key``; fails after ``limit_s``."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            await router.Chat(_hello(), metadata=_bearer(key), timeout=5)
        except grpc.aio.AioRpcError as exc:
            error = GatewayError.from_rpc_error(exc)
            assert error.code == grpc.StatusCode.UNAUTHENTICATED, (error.code, error.message)
            assert error.reason == Reason.INVALID_API_KEY
            assert key not in error.message
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"the revoked key still worked after {limit_s}s")


async def test_revocation_reaches_every_router(stack: Stack) -> None:
    admin = _bearer(ADMIN_KEY)
    await stack.auth.CreateTenant(
        auth_pb2.CreateTenantRequest(tenant=auth_pb2.Tenant(tenant_id="acme", display_name="Acme")), metadata=admin
    )
    created = await stack.auth.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="acme", name="replicated"), metadata=admin)
    key = created.secret
    # Both routers answer for the key, so both hold it in their auth cache.
    for router in stack.routers:
        reply = await router.Chat(_hello(), metadata=_bearer(key), timeout=5)
        assert reply.completion.choices[0].message.text
    revoked = await stack.auth.RevokeKey(auth_pb2.RevokeKeyRequest(key_id=created.key.key_id), metadata=admin)
    assert revoked.key.HasField("revoke_time")
    took = await asyncio.gather(
        *(_seconds_until_refused(router, key, limit_s=2 * REVOCATION_BOUND_S) for router in stack.routers)
    )
    assert all(seconds < REVOCATION_BOUND_S for seconds in took), took
    # And it stays refused on both.
    for router in stack.routers:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await router.Chat(_hello(), metadata=_bearer(key), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
