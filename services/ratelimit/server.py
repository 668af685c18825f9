"""Wires the rate limit service: a store (Redis when configured, else memory), the limiter, gRPC.

Lifecycle: ``on_ready`` waits until Redis answers PING, so health turns SERVING only then;
``on_stop`` (after the server stopped with its grace period) closes the Redis connection pool.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import GrpcServer, ServiceApp, ServiceRegistration
from services.ratelimit.limiter import Limiter
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.storage import LimitStore
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
    if settings.redis_url:
        client = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=_REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=_REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
        store = RedisStore(client)
    else:
        store = MemoryStore()
    limiter = Limiter(store, outage_policy=settings.outage_policy, default_ttl_s=settings.lease_s)
    registration = ServiceRegistration(
        add=ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server,
        servicer=RateLimitServicer(limiter),
        name=ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name,
    )
    server = GrpcServer(listen or config.services.ratelimit.listen, [registration])
    return ServiceApp("ratelimit", server, on_ready=limiter.wait_ready, on_stop=limiter.close)
