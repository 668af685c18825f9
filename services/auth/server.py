"""Wires the auth service: SQL store, accounts, servicer, gRPC server, and its start and stop.

Start (``on_ready``), before health reports SERVING:
1. the database answers a ping;
2. under a PostgreSQL advisory lock (replicas start one after another), Alembic upgrades the
   schema to head and the bootstrap keys are put in place;
3. every KEK id the stored credentials name must be configured and open one of its rows, else the
   service stops with a message saying which KEK is missing or wrong (it never serves credentials
   it cannot read); data keys an older KEK wraps are then re-wrapped in the background.
Stop (``on_stop``), after the server drained: the re-wrap is cancelled, the engine's connections
closed, the channels to ratelimit and metering (credential states and usage for listings) closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.auth.v1 import auth_pb2_grpc, credentials_pb2_grpc
from gateway.metering.v1 import metering_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway_common.config import ConfigError, GatewayConfig, effective_providers
from gateway_common.db import async_database_url
from gateway_common.grpc_client import open_channel
from gateway_common.grpc_server import GrpcServer, ServiceApp, ServiceRegistration
from gateway_common.redaction import install_log_redaction
from gateway_common.tls import client_credentials

from .accounts import Accounts, Clock, utc_now
from .bootstrap import bootstrap
from .credentials.domain import Credentials
from .credentials.keyring import load_keyring
from .credentials.ledger_usage import MeteringMonthUsage
from .credentials.runtime import RateLimitRuntime
from .credentials.servicer import SERVICE_NAME as CREDENTIALS_SERVICE_NAME
from .credentials.servicer import CredentialServicer
from .credentials.store import SqlCredentialStore
from .routes import Routes
from .servicer import SERVICE_NAME, AuthServicer
from .settings import AuthSecrets
from .storage.migrate import startup_lock, upgrade
from .storage.routes import SqlRouteStore
from .storage.sql import SqlStore

_CONNECT_TIMEOUT_S = 3.0

log = logging.getLogger(__name__)


def _anchor_sqlite_path(url: str) -> str:
    """A relative SQLite file resolved against today's working directory, so the file the service
    opens never depends on where a later connection happens to be made from."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if Path(database).is_absolute():
        return url
    return parsed.set(database=str(Path(database).resolve())).render_as_string(hide_password=False)


def build(
    config: GatewayConfig,
    *,
    listen: str | None = None,
    secrets: AuthSecrets | None = None,
    clock: Clock = utc_now,
) -> ServiceApp:
    """The auth service, not yet started. ``secrets=None`` reads them from the environment
    (ConfigError when malformed); ``clock`` is for tests of expiry."""
    secrets = AuthSecrets.from_env() if secrets is None else secrets
    # This process holds upstream secrets in clear while it seals and resolves them: a last line of
    # defence should one ever reach a log line.
    install_log_redaction()
    url = async_database_url(_anchor_sqlite_path(config.auth.database_url))
    demo_key_file = Path(config.auth.demo_key_file).resolve()
    shown_url = make_url(url).render_as_string(hide_password=True)
    # A pooled PostgreSQL connection can die with a database restart; SQLite's cannot. The connect
    # timeout (asyncpg's default is 60 s) keeps an unreachable database a quick 503, well inside
    # the router's deadline for Authenticate, rather than a 504.
    postgres = make_url(url).get_backend_name() == "postgresql"
    engine = create_async_engine(
        url, pool_pre_ping=postgres, connect_args={"timeout": _CONNECT_TIMEOUT_S} if postgres else {}
    )
    store = SqlStore(engine)
    routes = Routes(SqlRouteStore(engine), effective_providers(config), clock)
    accounts = Accounts(store, clock)
    servicer = AuthServicer(accounts, cache_ttl_seconds=math.ceil(config.auth.cache_ttl_s), routes=routes)
    settings = config.auth.credentials
    keyring = load_keyring(Path(settings.kek_file).resolve())
    credentials = Credentials(SqlCredentialStore(engine), keyring, clock, settings.cache_ttl_s)
    # Listings show each credential's cooldown and window usage, which ratelimit keeps, and what it
    # served this month, which metering's ledger keeps; the channels connect lazily, and an outage
    # of either only leaves its fields unset.
    tls = client_credentials(config.tls, "auth")
    ratelimit_channel = open_channel(config.services.ratelimit.address, credentials=tls)
    metering_channel = open_channel(config.services.metering.address, credentials=tls)
    runtime = RateLimitRuntime(ratelimit_pb2_grpc.RateLimitServiceStub(ratelimit_channel))
    month_usage = MeteringMonthUsage(metering_pb2_grpc.MeteringServiceStub(metering_channel), clock)
    server = GrpcServer(
        listen or config.services.auth.listen,
        [
            ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer, SERVICE_NAME),
            ServiceRegistration(
                credentials_pb2_grpc.add_CredentialServiceServicer_to_server,
                CredentialServicer(accounts, credentials, runtime=runtime, ledger=month_usage),
                CREDENTIALS_SERVICE_NAME,
            ),
        ],
    )
    background: set[asyncio.Task[None]] = set()

    async def rewrap() -> None:
        try:
            await credentials.rewrap_all()
        except Exception:
            # The RPC (``gateway credentials rewrap``) can finish the job; serving goes on meanwhile.
            log.exception("background re-wrap of credential data keys failed")

    async def on_ready() -> None:
        try:
            await store.ping()
        except (OSError, SQLAlchemyError) as exc:
            raise ConfigError(f"auth database {shown_url} cannot be reached: {exc}") from exc
        async with startup_lock(engine):
            await upgrade(engine)
            await bootstrap(store, secrets, demo_key_file, clock)
        await credentials.verify_keys()
        if settings.rewrap_at_start:
            task = asyncio.create_task(rewrap())
            background.add(task)
            task.add_done_callback(background.discard)

    async def on_stop() -> None:
        for task in list(background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await engine.dispose()
        await ratelimit_channel.close(None)
        await metering_channel.close(None)

    return ServiceApp("auth", server, on_ready=on_ready, on_stop=on_stop)
