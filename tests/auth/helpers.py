"""Starting the auth service in-process, and small helpers its tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from gateway.auth.v1 import auth_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError
from gateway_common.grpc_server import ServiceApp
from services.auth.accounts import utc_now
from services.auth.server import build
from services.auth.settings import AuthSecrets


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def auth_config(database_url: str, folder: Path, cache_ttl_s: float = 2.0) -> GatewayConfig:
    """A configuration whose auth part points at ``database_url`` and keeps files in ``folder``."""
    return GatewayConfig.model_validate(
        {
            "auth": {
                "database_url": database_url,
                "demo_key_file": str(folder / "demo" / "key"),
                "cache_ttl_s": cache_ttl_s,
                # Never the working directory's .gateway/: each test its own generated KEK file.
                "credentials": {"kek_file": str(folder / "credentials.kek")},
            }
        }
    )


@dataclass
class RunningAuth:
    """A started auth service and a channel to it."""

    app: ServiceApp
    port: int
    channel: grpc.aio.Channel
    stub: auth_pb2_grpc.AuthServiceAsyncStub


@asynccontextmanager
async def running_auth(
    config: GatewayConfig, secrets: AuthSecrets | None = None, clock: FakeClock | None = None
) -> AsyncIterator[RunningAuth]:
    """The auth service on a free loopback port for the block; ``secrets=None`` reads the environment,
    ``clock=None`` is the real clock."""
    app = build(config, listen="127.0.0.1:0", secrets=secrets, clock=clock or utc_now)
    try:
        port = await app.start()
    except BaseException:
        await app.stop(0)
        raise
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield RunningAuth(app, port, channel, auth_pb2_grpc.AuthServiceStub(channel))
    finally:
        await channel.close(None)
        await app.stop(0)


def bearer(key: str) -> tuple[tuple[str, str]]:
    """Call metadata that presents ``key``."""
    return (("authorization", f"Bearer {key}"),)


def gateway_error(exc: grpc.aio.AioRpcError) -> GatewayError:
    """The rich error a call failed with."""
    return GatewayError.from_rpc_error(exc)
