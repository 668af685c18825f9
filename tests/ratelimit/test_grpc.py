"""The service over real gRPC, in-process: translation, validation, health and the outage policy."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Literal

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig, RateLimitConfig
from gateway_common.errors import GatewayError
from gateway_common.grpc_server import ServiceApp
from services.ratelimit.server import build
from tests.servers import free_port, redis_server

pb = ratelimit_pb2
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def descriptor(**entries: str) -> pb.Descriptor:
    return pb.Descriptor(entries=[pb.DescriptorEntry(key=k, value=v) for k, v in entries.items()])


def quota(unit: int, window: int, limit: int) -> quota_pb2.Quota:
    return quota_pb2.Quota(unit=unit, window=window, limit=limit)  # type: ignore[arg-type]


def acquire_request(
    *limits: pb.DescriptorLimits, rid: str | None = None, tokens: int = 0, cost: int = 0
) -> pb.AcquireRequest:
    return pb.AcquireRequest(
        reservation_id=rid or uuid.uuid4().hex,
        limits=limits,
        amounts=pb.Amounts(requests=1, tokens=tokens, cost_micro_usd=cost),
    )


class Running:
    """A started app and a stub on a real channel to it."""

    def __init__(self, app: ServiceApp, port: int) -> None:
        self.app = app
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = ratelimit_pb2_grpc.RateLimitServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def status(self) -> int:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)

    async def close(self) -> None:
        await self.channel.close(None)
        await self.app.stop(0)


@pytest.fixture(params=["memory", "redis"])
async def service(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    app = build(
        GatewayConfig(ratelimit=RateLimitConfig(redis_url=redis_url, rebuild_from_ledger=False)), listen="127.0.0.1:0"
    )
    running = Running(app, await app.start())
    yield running
    await running.close()


async def test_acquire_and_settle_round_trip(service: Running) -> None:
    who = descriptor(tenant="acme", key=uuid.uuid4().hex)
    limits = pb.DescriptorLimits(
        descriptor=who,
        quotas=[quota(quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_DAY, 2), quota(quota_pb2.UNIT_TOKENS, 2, 500)],
    )
    assert await service.status() == SERVING
    rid = uuid.uuid4().hex
    first = await service.stub.Acquire(acquire_request(limits, rid=rid, tokens=300))
    assert first.allowed and not first.degraded and not first.HasField("retry_after")
    requests, tokens = first.statuses
    assert requests.descriptor == who and requests.quota == limits.quotas[0]
    assert (requests.remaining, tokens.remaining) == (1, 200)
    assert 0 < tokens.reset_after.ToMilliseconds() <= 86_400_000
    assert not requests.exceeded

    refused = await service.stub.Acquire(acquire_request(limits, tokens=300))
    assert not refused.allowed
    assert [s.exceeded for s in refused.statuses] == [False, True]
    assert refused.retry_after == refused.statuses[1].reset_after

    assert (await service.stub.Settle(pb.SettleRequest(reservation_id=rid, actual=pb.Amounts(requests=1)))).found
    assert not (await service.stub.Settle(pb.SettleRequest(reservation_id=rid))).found
    assert (await service.stub.Acquire(acquire_request(limits, tokens=500))).allowed


async def test_concurrency_refusal_has_no_exceeded_quota_and_a_short_retry(service: Running) -> None:
    limits = pb.DescriptorLimits(
        descriptor=descriptor(key=uuid.uuid4().hex),
        quotas=[quota(quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_DAY, 10)],
        max_concurrent=1,
    )
    assert (await service.stub.Acquire(acquire_request(limits))).allowed
    refused = await service.stub.Acquire(acquire_request(limits))
    assert not refused.allowed and not refused.degraded
    assert [(s.remaining, s.exceeded) for s in refused.statuses] == [(9, False)]
    assert refused.retry_after.ToMilliseconds() == 1000


def _limits(*quotas: quota_pb2.Quota, max_concurrent: int | None = None) -> pb.DescriptorLimits:
    return pb.DescriptorLimits(descriptor=descriptor(key="k"), quotas=quotas, max_concurrent=max_concurrent)


_RPM = quota(quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MINUTE, 5)
INVALID = [
    (pb.AcquireRequest(limits=[_limits(_RPM)]), "reservation_id"),
    (acquire_request(_limits(_RPM), _limits(_RPM, quota(0, quota_pb2.WINDOW_DAY, 5))), "limits[1].quotas[1].unit"),
    (acquire_request(_limits(quota(quota_pb2.UNIT_TOKENS, 0, 5))), "limits[0].quotas[0].window"),
    (acquire_request(_limits(quota(quota_pb2.UNIT_TOKENS, 9, 5))), "limits[0].quotas[0].window"),
    (acquire_request(_limits(quota(quota_pb2.UNIT_TOKENS, 1, -1))), "limits[0].quotas[0].limit"),
    (acquire_request(_limits(_RPM, max_concurrent=-1)), "limits[0].max_concurrent"),
    (acquire_request(_limits(_RPM), tokens=-5), "amounts.tokens"),
    (acquire_request(_limits(_RPM), cost=-1), "amounts.cost_micro_usd"),
    (
        pb.AcquireRequest(reservation_id="r", reservation_ttl=duration_pb2.Duration(seconds=-1)),
        "reservation_ttl",
    ),
    (
        pb.AcquireRequest(reservation_id="r", reservation_ttl=duration_pb2.Duration(seconds=8 * 86_400)),
        "reservation_ttl",
    ),
    (pb.SettleRequest(actual=pb.Amounts(tokens=1)), "reservation_id"),
    (pb.SettleRequest(reservation_id="r", actual=pb.Amounts(requests=-1)), "actual.requests"),
]


@pytest.mark.parametrize(("request_", "path"), INVALID, ids=[path for _, path in INVALID])
async def test_invalid_requests_name_the_field(
    service: Running, request_: pb.AcquireRequest | pb.SettleRequest, path: str
) -> None:
    key = uuid.uuid4().hex
    if isinstance(request_, pb.AcquireRequest):
        request_ = pb.AcquireRequest.FromString(request_.SerializeToString())
        for item in request_.limits:
            item.descriptor.entries[0].value = key
        call = service.stub.Acquire
    else:
        call = service.stub.Settle  # type: ignore[assignment]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request_)  # type: ignore[arg-type]
    error = GatewayError.from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.field_violations] == [path]
    # The refused request counted nothing.
    fresh = pb.DescriptorLimits(descriptor=descriptor(key=key), quotas=[_RPM])
    assert [s.remaining for s in (await service.stub.Acquire(acquire_request(fresh))).statuses] == [4]


def _errors(operation: str) -> float:
    return REGISTRY.get_sample_value("gateway_ratelimit_backend_errors_total", {"operation": operation}) or 0.0


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_redis_down_follows_the_outage_policy(policy: Literal["fail_open", "fail_closed"]) -> None:
    config = GatewayConfig(
        ratelimit=RateLimitConfig(
            redis_url=f"redis://127.0.0.1:{free_port()}/0", outage_policy=policy, rebuild_from_ledger=False
        )
    )
    port = free_port()
    app = build(config, listen=f"127.0.0.1:{port}")
    starting = asyncio.create_task(app.start())  # stays in on_ready: Redis never answers PING
    running = Running(app, port)
    try:
        for _ in range(100):
            with contextlib.suppress(grpc.aio.AioRpcError):
                assert await running.status() == NOT_SERVING
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the server never answered")
        acquire_errors, settle_errors = _errors("acquire"), _errors("settle")

        limits = _limits(_RPM)
        for _ in range(3):
            decision = await running.stub.Acquire(acquire_request(limits), timeout=10)
            assert decision.degraded and not decision.statuses
            if policy == "fail_open":
                assert decision.allowed and not decision.HasField("retry_after")
            else:
                assert not decision.allowed and decision.retry_after.ToMilliseconds() == 1000
        assert not (await running.stub.Settle(pb.SettleRequest(reservation_id="r"), timeout=10)).found

        # A renewal cannot tell expired from unreachable: it fails rather than report leases lost.
        with pytest.raises(grpc.aio.AioRpcError) as renewal:
            await running.stub.RenewLeases(pb.RenewLeasesRequest(reservation_ids=["r"]), timeout=10)
        assert renewal.value.code() == grpc.StatusCode.UNAVAILABLE

        assert _errors("acquire") == acquire_errors + 3
        assert _errors("settle") == settle_errors + 1
        assert not starting.done()
        assert await running.status() == NOT_SERVING
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await running.close()


async def test_redis_going_away_while_serving_degrades_without_crashing() -> None:
    limits = _limits(_RPM)
    with redis_server() as url:
        config = GatewayConfig(
            ratelimit=RateLimitConfig(redis_url=url, outage_policy="fail_closed", rebuild_from_ledger=False)
        )
        app = build(config, listen="127.0.0.1:0")
        running = Running(app, await app.start())
        assert await running.status() == SERVING
        assert (await running.stub.Acquire(acquire_request(limits))).allowed
    try:
        refused = await running.stub.Acquire(acquire_request(limits), timeout=10)
        assert refused.degraded and not refused.allowed
    finally:
        await running.close()


async def test_renew_leases_reports_what_is_not_pending(service: Running) -> None:
    capped = pb.DescriptorLimits(descriptor=descriptor(key=uuid.uuid4().hex), max_concurrent=1)
    held = acquire_request(capped)
    held.reservation_ttl.FromMilliseconds(60_000)
    assert (await service.stub.Acquire(held)).allowed
    renewal = pb.RenewLeasesRequest(reservation_ids=[held.reservation_id, "never-acquired"])
    renewal.lease.FromMilliseconds(30_000)
    assert list((await service.stub.RenewLeases(renewal)).missing_reservation_ids) == ["never-acquired"]
    assert not (await service.stub.Acquire(acquire_request(capped))).allowed  # still held

    for bad in (
        pb.RenewLeasesRequest(lease=duration_pb2.Duration(seconds=-1)),
        pb.RenewLeasesRequest(reservation_ids=["r"] * 10_001),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.stub.RenewLeases(bad)
        error = GatewayError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.field_violations] == ["lease" if bad.HasField("lease") else "reservation_ids"]


def test_the_default_lease_frees_a_dead_routers_slots_within_30_s() -> None:
    assert RateLimitConfig().lease_s <= 30


async def test_an_acquire_without_ttl_gets_the_configured_lease() -> None:
    # No metering behind this limiter: nothing to rebuild counters from.
    app = build(GatewayConfig(ratelimit=RateLimitConfig(lease_s=0.3, rebuild_from_ledger=False)), listen="127.0.0.1:0")
    running = Running(app, await app.start())
    try:
        capped = pb.DescriptorLimits(descriptor=descriptor(key=uuid.uuid4().hex), max_concurrent=1)
        assert (await running.stub.Acquire(acquire_request(capped))).allowed
        assert not (await running.stub.Acquire(acquire_request(capped))).allowed
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not (await running.stub.Acquire(acquire_request(capped))).allowed:
            assert loop.time() - started < 5, "the lease did not expire"
            await asyncio.sleep(0.05)
        assert loop.time() - started > 0.2  # not before its lease ran out
    finally:
        await running.close()
