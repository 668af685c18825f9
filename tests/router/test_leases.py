"""The router's lease renewal against a real ratelimit service (in-process, memory backend, short lease)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig, RateLimitConfig
from services.ratelimit.server import build
from services.router.leases import LEASES_LOST, Leases

LEASE_S = 0.3


class CountingStub:
    """The ratelimit stub, counting RenewLeases calls and the ids they carry."""

    def __init__(self, stub: ratelimit_pb2_grpc.RateLimitServiceStub) -> None:
        self._stub = stub
        self.renewals: list[int] = []

    def Acquire(self, request: ratelimit_pb2.AcquireRequest, **kwargs: Any) -> Any:
        return self._stub.Acquire(request, **kwargs)

    def RenewLeases(self, request: ratelimit_pb2.RenewLeasesRequest, **kwargs: Any) -> Any:
        self.renewals.append(len(request.reservation_ids))
        return self._stub.RenewLeases(request, **kwargs)


@pytest.fixture
async def stub() -> AsyncIterator[CountingStub]:
    # No metering behind this limiter: nothing to rebuild counters from.
    app = build(
        GatewayConfig(ratelimit=RateLimitConfig(lease_s=LEASE_S, rebuild_from_ledger=False)), listen="127.0.0.1:0"
    )
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield CountingStub(ratelimit_pb2_grpc.RateLimitServiceStub(channel))
    finally:
        await channel.close(None)
        await app.stop(0)


def _capped(key: str, cap: int) -> ratelimit_pb2.DescriptorLimits:
    descriptor = ratelimit_pb2.Descriptor(entries=[ratelimit_pb2.DescriptorEntry(key="key", value=key)])
    return ratelimit_pb2.DescriptorLimits(descriptor=descriptor, max_concurrent=cap)


async def _acquire(stub: CountingStub, leases: Leases, limits: ratelimit_pb2.DescriptorLimits) -> str | None:
    rid = uuid.uuid4().hex
    request = ratelimit_pb2.AcquireRequest(
        reservation_id=rid, limits=[limits], amounts=ratelimit_pb2.Amounts(requests=1)
    )
    request.reservation_ttl.CopyFrom(leases.lease)
    return rid if (await stub.Acquire(request)).allowed else None


async def test_in_flight_reservations_keep_their_slots_with_one_renewal_call_per_tick(stub: CountingStub) -> None:
    leases = Leases(stub, LEASE_S)  # type: ignore[arg-type]
    capped = _capped(uuid.uuid4().hex, 20)
    held = [await _acquire(stub, leases, capped) for _ in range(20)]
    assert None not in held
    for rid in held:
        leases.hold(rid)  # type: ignore[arg-type]
    leases.start()
    try:
        await asyncio.sleep(4 * LEASE_S)  # time passing is the point: four leases without a settle
        assert await _acquire(stub, leases, capped) is None, "a renewed slot was freed"
        # One call per third of a lease for all twenty, not one per reservation.
        assert 6 <= len(stub.renewals) <= 13 and set(stub.renewals) == {20}
    finally:
        await leases.stop()
    for rid in held:
        leases.release(rid)  # type: ignore[arg-type]
    # Nothing renews them any more: the slots come back within a lease.
    loop = asyncio.get_running_loop()
    started = loop.time()
    while await _acquire(stub, leases, capped) is None:
        assert loop.time() - started < 3 * LEASE_S + 1
        await asyncio.sleep(0.02)


async def test_a_released_reservation_is_no_longer_renewed_and_a_lost_lease_is_reported(stub: CountingStub) -> None:
    leases = Leases(stub, LEASE_S)  # type: ignore[arg-type]
    capped = _capped(uuid.uuid4().hex, 1)
    rid = await _acquire(stub, leases, capped)
    assert rid is not None
    leases.hold(rid)
    leases.hold("never-acquired")
    lost_before = LEASES_LOST._value.get()
    await leases.renew()
    assert stub.renewals == [2]
    assert LEASES_LOST._value.get() == lost_before + 1
    assert len(leases) == 1  # the lost one is dropped, the live one kept
    leases.release(rid)
    await leases.renew()
    assert stub.renewals == [2]  # nothing held: no call at all
