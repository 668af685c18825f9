"""A route override set through auth reaches every router within seconds, without a restart: the
real auth, ratelimit, providers and metering services in-process, two routers in front of them."""

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
from gateway_common.grpc_server import ServiceApp
from services.auth.server import build as build_auth
from services.auth.settings import AuthSecrets
from services.metering.server import build as build_metering
from services.providers.server import build as build_providers
from services.ratelimit.server import build as build_ratelimit
from services.router.server import build as build_router

ADMIN_KEY = "gw-routes-two-routers-admin-0123456789ab"
LOOPBACK = "127.0.0.1:0"
# routing.override_refresh_s is 2 s by default; a change must show on every router well within this.
VISIBLE_WITHIN_S = 5.0


@dataclass
class Stack:
    """Two routers over one set of real backend services, and a stub of the auth service."""

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
            "limits": {"requests_per_minute": 100_000},
            # A provider of the operator's own that nothing reaches: an override to it is visible
            # as the upstream's failure, one to the mock as an answer.
            "providers": {"openai-eu": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "router": {"max_attempts": 1},
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
        auth = await _started(exits, build_auth(base, listen=LOOPBACK, secrets=AuthSecrets(admin_key=ADMIN_KEY)))
        metering = await _started(exits, build_metering(base, listen=LOOPBACK))
        ledger = {"metering": {"listen": LOOPBACK, "address": metering}}
        ratelimit = await _started(exits, build_ratelimit(_config(tmp_path, services=ledger), listen=LOOPBACK))
        providers = await _started(exits, build_providers(base, listen=LOOPBACK, env={}))
        addresses = {"auth": auth, "metering": metering, "ratelimit": ratelimit, "providers": providers}
        services = {name: {"listen": LOOPBACK, "address": address} for name, address in addresses.items()}
        routers = [
            await _started(
                exits,
                build_router(
                    _config(
                        tmp_path,
                        services=services,
                        metering={
                            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'metering.db'}",
                            "spool_path": str(tmp_path / f"router-{index}-spool.db"),
                        },
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


def _bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def _served_by(router: router_pb2_grpc.RouterServiceAsyncStub, key: str, model: str) -> str:
    """The provider that answered ``model``, or the gRPC code it failed with."""
    request = router_pb2.ChatRequest(
        completion=chat_pb2.ChatCompletionRequest(
            model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Which route?")]
        )
    )
    try:
        reply = await router.Chat(request, metadata=_bearer(key), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return reply.completion.provider


async def _seconds_until(router: router_pb2_grpc.RouterServiceAsyncStub, key: str, model: str, want: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 2 * VISIBLE_WITHIN_S:
        if await _served_by(router, key, model) == want:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{model} was still not served by {want} after {2 * VISIBLE_WITHIN_S}s")


async def test_an_override_reaches_both_routers_within_seconds(stack: Stack) -> None:
    admin = _bearer(ADMIN_KEY)
    await stack.auth.CreateTenant(
        auth_pb2.CreateTenantRequest(tenant=auth_pb2.Tenant(tenant_id="acme", display_name="Acme")), metadata=admin
    )
    key = (await stack.auth.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="acme"), metadata=admin)).secret
    # Before: gpt-4o routes by prefix to openai, which has no key here, so it fails on both routers.
    before = [await _served_by(router, key, "gpt-4o") for router in stack.routers]
    assert all(code not in ("OK", "mock", "NOT_FOUND") for code in before), before
    await stack.auth.SetRoute(
        auth_pb2.SetRouteRequest(model="gpt-4o", provider="mock", upstream_model="echo"), metadata=admin
    )
    took = await asyncio.gather(*(_seconds_until(r, key, "gpt-4o", "mock") for r in stack.routers))
    assert all(seconds < VISIBLE_WITHIN_S for seconds in took), took
    # Replacing and deleting travel the same way.
    await stack.auth.DeleteRoute(auth_pb2.DeleteRouteRequest(model="gpt-4o"), metadata=admin)
    took = await asyncio.gather(*(_seconds_until(r, key, "gpt-4o", before[0]) for r in stack.routers))
    assert all(seconds < VISIBLE_WITHIN_S for seconds in took), took
