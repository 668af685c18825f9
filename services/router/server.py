"""Wires the router: one channel per downstream service, the orchestrator, the servicer.

Start: the usage spool is opened (locked to this process; intents a dead predecessor left are
recovered) and its shipper started before the router reports SERVING, so what the spool holds
is shipped first.

Shutdown order (ServiceApp): health NOT_SERVING, stop accepting and let in-flight calls finish,
then stop the job workers (a running job is cancelled, metered, and queued again), retire the
quota blocks, stop renewing leases, drain settlements (the blocks' among them), then ship what the
spool holds within the grace time (the rest stays on disk for the next start), close the spool,
then close the channels.
"""

from __future__ import annotations

import grpc
from redis.asyncio import Redis

from gateway.auth.v1 import auth_pb2_grpc
from gateway.metering.v1 import metering_pb2_grpc, response_store_pb2_grpc
from gateway.providers.v1 import providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_client import open_channel
from gateway_common.grpc_server import GrpcServer, ServiceApp, ServiceRegistration
from gateway_common.periodic import Periodic
from gateway_common.tls import client_credentials
from services.router.auth_cache import AuthCache
from services.router.background import BackgroundTasks
from services.router.breaker import BreakerSettings, RedisBreakers
from services.router.conversations import Conversations
from services.router.jobs.role import JobsRole
from services.router.leases import Leases
from services.router.orchestrator import Orchestrator
from services.router.planner import Planner
from services.router.quota_blocks import QuotaBlocks
from services.router.routes import RouteTable
from services.router.servicer import RouterServicer
from services.router.spool_adoption import PLACEHOLDER, adopt_orphans, spool_path
from services.router.usage_shipper import UsageShipper
from services.router.usage_spool import UsageSpool

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


def build(config: GatewayConfig, *, listen: str | None = None) -> ServiceApp:
    """The router service, ready to start."""
    addresses = config.services
    # Every downstream checks that the caller is the router: its channels show the router's certificate.
    credentials = client_credentials(config.tls, "router")
    channels = [
        open_channel(addresses.auth.address, credentials=credentials),
        open_channel(addresses.ratelimit.address, credentials=credentials),
        open_channel(addresses.providers.address, credentials=credentials),
        open_channel(addresses.metering.address, credentials=credentials),
    ]
    auth_channel, ratelimit_channel, providers_channel, metering_channel = channels
    providers = providers_pb2_grpc.ProviderServiceStub(providers_channel)
    metering_stub = metering_pb2_grpc.MeteringServiceStub(metering_channel)
    spool = UsageSpool(spool_path(config.metering.spool_path))
    # Replicas sharing a spool volume take over the files of replicas that are gone (a replica may
    # die at any time, so not only at start).
    template = config.metering.spool_path
    adoption = (
        Periodic("spool-adoption", 60.0, lambda: adopt_orphans(spool, template), run_at_start=True)
        if PLACEHOLDER in template
        else None
    )
    shipper = UsageShipper(
        spool,
        metering_stub,
        batch_size=config.metering.batch_size,
        flush_interval_s=config.metering.flush_interval_s,
    )
    background = BackgroundTasks()
    ratelimit = ratelimit_pb2_grpc.RateLimitServiceStub(ratelimit_channel)
    leases = Leases(ratelimit, config.ratelimit.lease_s)
    # A block admits locally only while the channel to the limiter is up (a dead limiter: none).
    quota_blocks = (
        QuotaBlocks(
            ratelimit,
            config.router.quota_blocks,
            background,
            leases,
            connected=lambda: ratelimit_channel.get_state() == grpc.ChannelConnectivity.READY,
        )
        if config.router.quota_blocks.enabled
        else None
    )
    auth_stub = auth_pb2_grpc.AuthServiceStub(auth_channel)
    routes = RouteTable(auth_stub, config.routing.override_refresh_s)
    router_config = config.router
    redis = Redis.from_url(router_config.redis_url) if router_config.redis_url else None
    # With Redis, every router sees the breakers any of them opened (polled, not asked per request).
    breakers = (
        RedisBreakers(
            redis,
            BreakerSettings(
                router_config.unhealthy_after_failures,
                router_config.breaker_window_s,
                router_config.unhealthy_cooldown_s,
                router_config.breaker_probe_timeout_s,
            ),
            poll_s=router_config.breaker_poll_s,
        )
        if redis is not None
        else None
    )
    orchestrator = Orchestrator(
        config,
        AuthCache(auth_stub, ttl_s=config.auth.cache_ttl_s),
        ratelimit,
        providers,
        spool,
        background,
        leases,
        planner=Planner(config, overrides=routes.current),
        breakers=breakers,
        quota_blocks=quota_blocks,
    )
    # Stored Responses API responses live in metering, beside the ledger (same channel).
    conversations = Conversations(response_store_pb2_grpc.ResponseStoreServiceStub(metering_channel))
    servicer = RouterServicer(orchestrator, providers, metering_stub, conversations)
    # Async jobs are a role of every router: same orchestrator, same governance, a durable queue.
    jobs = JobsRole(config, orchestrator, auth_stub, redis, conversations)
    server = GrpcServer(
        listen or addresses.router.listen,
        [
            ServiceRegistration(router_pb2_grpc.add_RouterServiceServicer_to_server, servicer, SERVICE_NAME),
            jobs.registration,
        ],
    )

    async def on_ready() -> None:
        try:
            await spool.open()
        except BaseException:
            await spool.close()
            raise
        shipper.start()
        leases.start()
        await routes.start()
        if breakers is not None:
            breakers.start()
        if adoption is not None:
            adoption.start()
        # Last: a job's run needs everything above (the spool above all).
        await jobs.start()

    async def on_stop() -> None:
        # Running jobs are cancelled (metered CANCELLED) and re-queued before their usage is drained.
        await jobs.stop()
        # In-flight calls have ended: nothing is left to renew, and settlements free the slots.
        await routes.stop()
        if quota_blocks is not None:
            # Every block is settled with what its requests used (drained below).
            quota_blocks.clear()
        await leases.stop()
        if breakers is not None:
            await breakers.stop()
        if adoption is not None:
            await adoption.stop()
        await background.drain()
        await shipper.drain()
        await spool.close()
        for channel in channels:
            await channel.close(None)
        if redis is not None:
            await redis.aclose()

    return ServiceApp("router", server, on_ready=on_ready, on_stop=on_stop)
