"""Wires the rate limit service: a store (Redis when configured, else memory), the limiter, gRPC.

Lifecycle: ``on_ready`` waits until Redis answers PING and, when the counters were lost (a fresh
Redis or a new memory store), until they are rebuilt from metering's ledger after the rebuild's
grace (``ratelimit.rebuild_grace_s``), so health turns SERVING only then, and Acquire refuses
until then; ``on_stop`` (after the server stopped with its grace period) cancels a pending rebuild,
closes the Redis connection pool and the metering channel.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.metering.v1 import metering_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_client import open_channel
from gateway_common.grpc_server import GrpcServer, ServiceApp, ServiceRegistration
from gateway_common.tls import client_credentials
from services.ratelimit.credentials import CredentialSelector
from services.ratelimit.limiter import Limiter
from services.ratelimit.rebuild import MeteringLedger, Rebuilder
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.storage import LimitStore
from services.ratelimit.storage.cooldown import Backoff, CooldownStore, MemoryCooldowns, RedisCooldowns
from services.ratelimit.storage.memory import MemoryStore
from services.ratelimit.storage.redis import RedisStore

# Acquire is on every request's path: a Redis that does not answer must fail fast into the outage
# policy, not stall the request. One immediate retry rides over a pooled connection that Redis
# closed (restart, idle timeout); it is safe because Acquire is idempotent by reservation id.
_REDIS_CONNECT_TIMEOUT_S = 0.5
_REDIS_TIMEOUT_S = 1.0


def build(config: GatewayConfig, *, listen: str | None = None) -> ServiceApp:
    """The rate limit service, not yet started; ``listen=None`` means the configured address."""
    settings = config.ratelimit
    store: LimitStore
    cooldowns: CooldownStore
    backoff = Backoff(
        base_ms=int(settings.credential_cooldown_base_s * 1000),
        cap_ms=int(settings.credential_cooldown_cap_s * 1000),
        forget_ms=int(settings.credential_failure_memory_s * 1000),
    )
    if settings.redis_url:
        client = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=_REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=_REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
        store = RedisStore(client, require_marker=settings.rebuild_from_ledger)
        cooldowns = RedisCooldowns(client, backoff)
    else:
        store = MemoryStore(require_restore=settings.rebuild_from_ledger)
        cooldowns = MemoryCooldowns(backoff)
    rebuilder: Rebuilder | None = None
    channel = None
    if settings.rebuild_from_ledger:
        channel = open_channel(
            config.services.metering.address, credentials=client_credentials(config.tls, "ratelimit")
        )
        ledger = MeteringLedger(metering_pb2_grpc.MeteringServiceStub(channel))
        rebuilder = Rebuilder(store, ledger, grace_s=settings.rebuild_grace_s)
    limiter = Limiter(
        store,
        outage_policy=settings.outage_policy,
        default_ttl_s=settings.lease_s,
        rebuilder=rebuilder,
    )
    registration = ServiceRegistration(
        add=ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server,
        servicer=RateLimitServicer(limiter, CredentialSelector(limiter, cooldowns)),
        name=ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name,
    )
    server = GrpcServer(listen or config.services.ratelimit.listen, [registration])

    async def on_stop() -> None:
        await limiter.close()
        if channel is not None:
            await channel.close(None)

    return ServiceApp("ratelimit", server, on_ready=limiter.wait_ready, on_stop=on_stop)
