"""The backend contract: memory and real Redis give the same answers to the same calls."""

from __future__ import annotations

import uuid

from services.ratelimit.quotas import CONCURRENCY_RETRY_MS, Unit, Window
from tests.ratelimit.conftest import Harness, limits

R, T, C = Unit.REQUESTS, Unit.TOKENS, Unit.COST_MICRO_USD
MIN, DAY, MONTH = Window.MINUTE, Window.DAY, Window.MONTH


async def test_allows_up_to_the_limit_then_refuses(harness: Harness) -> None:
    rpd = limits((R, DAY, 3))
    remaining = [(await harness.acquire([rpd])).statuses[0].remaining for _ in range(3)]
    assert remaining == [2, 1, 0]

    refused = await harness.acquire([rpd])
    assert not refused.allowed
    (status,) = refused.statuses
    assert status.exceeded and status.remaining == 0
    assert refused.retry_after_ms == status.reset_after_ms
    assert 0 < status.reset_after_ms <= 86_400_000


async def test_refusal_changes_nothing_anywhere(harness: Harness) -> None:
    roomy = limits((R, DAY, 10), (T, DAY, 1_000))
    tight = limits((T, DAY, 150))
    assert (await harness.acquire([roomy, tight], tokens=100)).allowed

    refused = await harness.acquire([roomy, tight], tokens=100)
    assert not refused.allowed
    assert [s.exceeded for s in refused.statuses] == [False, False, True]
    assert [s.remaining for s in refused.statuses] == [9, 900, 50]

    # The refused attempt counted nothing on the descriptor that had room.
    after = await harness.acquire([roomy], tokens=100)
    assert [s.remaining for s in after.statuses] == [8, 800]


async def test_every_window_resets_within_its_length(harness: Harness) -> None:
    decision = await harness.acquire([limits((R, MIN, 5), (R, DAY, 5), (R, MONTH, 5))])
    minute, day, month = (s.reset_after_ms for s in decision.statuses)
    assert 0 < minute <= 60_000
    assert 0 < day <= 86_400_000
    assert 0 < month <= 31 * 86_400_000
    assert minute <= day <= month


async def test_zero_limit_refuses_and_zero_amount_cannot(harness: Harness) -> None:
    descriptor = limits((T, DAY, 0), (C, DAY, 0))
    free = await harness.acquire([descriptor], tokens=0, cost=0)
    assert free.allowed
    assert [(s.remaining, s.exceeded) for s in free.statuses] == [(0, False), (0, False)]

    costly = await harness.acquire([descriptor], tokens=0, cost=1)
    assert not costly.allowed
    assert [s.exceeded for s in costly.statuses] == [False, True]


async def test_a_quota_already_overrun_refuses_only_requests_that_consume_its_unit(harness: Harness) -> None:
    descriptor = limits((R, DAY, 10), (T, DAY, 100))
    rid = uuid.uuid4().hex
    assert (await harness.acquire([descriptor], tokens=50, reservation_id=rid)).allowed
    assert await harness.settle(rid, tokens=150)  # the answer was longer than estimated

    no_tokens = await harness.acquire([descriptor], tokens=0)
    assert no_tokens.allowed
    assert [(s.remaining, s.exceeded) for s in no_tokens.statuses] == [(8, False), (0, False)]
    assert not (await harness.acquire([descriptor], tokens=1)).allowed


async def test_settle_replaces_the_estimate_both_ways(harness: Harness) -> None:
    tpd = limits((T, DAY, 1_000), (C, MONTH, 10_000))
    down = uuid.uuid4().hex
    assert (await harness.acquire([tpd], tokens=600, cost=6_000, reservation_id=down)).allowed
    assert await harness.settle(down, tokens=100, cost=1_000)

    up = uuid.uuid4().hex
    first = await harness.acquire([tpd], tokens=100, cost=1_000, reservation_id=up)
    assert [s.remaining for s in first.statuses] == [800, 8_000]
    assert await harness.settle(up, tokens=850, cost=8_500)

    # 100 + 850 used: a 51-token request no longer fits, a 50-token one does.
    assert not (await harness.acquire([tpd], tokens=51, cost=0)).allowed
    fits = await harness.acquire([tpd], tokens=50, cost=0)
    assert fits.allowed
    assert [s.remaining for s in fits.statuses] == [0, 500]


async def test_settle_reaches_counters_the_estimate_left_at_zero(harness: Harness) -> None:
    budget = limits((C, DAY, 10_000))
    rid = uuid.uuid4().hex
    assert (await harness.acquire([budget], cost=0, reservation_id=rid)).allowed
    assert await harness.settle(rid, cost=9_000)
    assert not (await harness.acquire([budget], cost=1_001)).allowed
    assert (await harness.acquire([budget], cost=1_000)).allowed


async def test_settle_never_goes_below_zero(harness: Harness) -> None:
    tpd = limits((T, DAY, 1_000))
    rid = uuid.uuid4().hex
    assert (await harness.acquire([tpd], tokens=300, reservation_id=rid)).allowed
    await harness.lose_counters()  # e.g. evicted by Redis under memory pressure
    assert (await harness.acquire([tpd], tokens=100)).allowed
    assert await harness.settle(rid, tokens=0)  # 100 - 300 stops at 0
    assert not (await harness.acquire([tpd], tokens=1_001)).allowed
    assert (await harness.acquire([tpd], tokens=1_000)).allowed


async def test_settle_is_idempotent_and_unknown_is_not_found(harness: Harness) -> None:
    tpd = limits((T, DAY, 1_000))
    rid = uuid.uuid4().hex
    assert not await harness.settle(rid)
    assert (await harness.acquire([tpd], tokens=500, reservation_id=rid)).allowed
    assert await harness.settle(rid, tokens=200)
    assert not await harness.settle(rid, tokens=0)
    status = (await harness.acquire([tpd], tokens=0)).statuses[0]
    assert status.remaining == 800


async def test_repeated_acquire_counts_once(harness: Harness) -> None:
    rpd = limits((R, DAY, 1), (T, DAY, 1_000))
    rid = uuid.uuid4().hex
    first = await harness.acquire([rpd], tokens=400, reservation_id=rid)
    again = await harness.acquire([rpd], tokens=400, reservation_id=rid)
    assert first.allowed and again.allowed
    assert [s.remaining for s in first.statuses] == [0, 600]
    assert [s.remaining for s in again.statuses] == [0, 600]
    assert not any(s.exceeded for s in again.statuses)
    assert not (await harness.acquire([rpd], tokens=1)).allowed


async def test_the_same_counter_named_twice_counts_once(harness: Harness) -> None:
    key = uuid.uuid4().hex
    both = [limits((R, DAY, 5), (R, DAY, 2), key=key), limits((R, DAY, 5), key=key)]
    assert [s.remaining for s in (await harness.acquire(both)).statuses] == [4, 1, 4]
    assert [s.remaining for s in (await harness.acquire(both)).statuses] == [3, 0, 3]
    refused = await harness.acquire(both)
    assert [s.exceeded for s in refused.statuses] == [False, True, False]


async def test_concurrency_cap_and_settle_frees_a_slot(harness: Harness) -> None:
    capped = limits((R, DAY, 100), max_concurrent=2)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert (await harness.acquire([capped], reservation_id=first)).allowed
    assert (await harness.acquire([capped], reservation_id=second)).allowed

    refused = await harness.acquire([capped])
    assert not refused.allowed
    assert refused.retry_after_ms == CONCURRENCY_RETRY_MS
    (slot,) = refused.refused_slots
    assert (slot.cap, slot.in_flight) == (2, 2)
    assert refused.statuses[0].remaining == 98 and not refused.statuses[0].exceeded

    assert await harness.settle(first)
    assert (await harness.acquire([capped])).allowed


async def test_zero_concurrency_cap_refuses_everything(harness: Harness) -> None:
    assert not (await harness.acquire([limits(max_concurrent=0)])).allowed


async def test_unsettled_reservation_expires_but_its_estimate_stands(harness: Harness) -> None:
    key = uuid.uuid4().hex
    capped = limits((R, DAY, 4), key=key, max_concurrent=2)
    assert (await harness.acquire([capped], ttl_ms=600_000)).allowed  # holds its slot throughout
    lost = uuid.uuid4().hex
    assert (await harness.acquire([capped], reservation_id=lost, ttl_ms=200)).allowed
    assert not (await harness.acquire([capped])).allowed

    async def slot_freed() -> bool:
        return (await harness.acquire([capped], ttl_ms=600_000)).allowed

    await harness.eventually(slot_freed, after_s=0.2)
    assert not await harness.settle(lost)
    # The expired reservation's request still counts: 3 admitted so far, one left.
    status = (await harness.acquire([limits((R, DAY, 4), key=key)])).statuses[0]
    assert status.remaining == 0


async def test_a_renewed_reservation_keeps_its_slot_past_its_first_lease(harness: Harness) -> None:
    capped = limits(max_concurrent=1)
    held = uuid.uuid4().hex
    assert (await harness.acquire([capped], reservation_id=held, ttl_ms=300)).allowed
    for _ in range(3):  # renewed more often than its lease runs out, as a router's heartbeat does
        assert await harness.renew(held, ttl_ms=300) == []
        await harness.pass_time(0.15)
    assert not (await harness.acquire([capped])).allowed  # 450 ms after a 300 ms lease: still held
    assert await harness.renew(held, ttl_ms=60_000) == []
    await harness.pass_time(0.4)
    assert not (await harness.acquire([capped])).allowed
    assert await harness.settle(held)  # a renewed reservation settles as usual and frees the slot
    assert (await harness.acquire([capped])).allowed


async def test_a_lease_not_renewed_frees_its_slot_and_its_amounts_stay_counted(harness: Harness) -> None:
    capped, tpd = limits(max_concurrent=1), limits((T, DAY, 150), (C, DAY, 1_000))
    lost = uuid.uuid4().hex
    assert (await harness.acquire([capped, tpd], tokens=100, cost=600, reservation_id=lost, ttl_ms=300)).allowed
    assert not (await harness.acquire([capped])).allowed

    async def slot_freed() -> bool:
        return (await harness.acquire([capped], ttl_ms=600_000)).allowed

    await harness.eventually(slot_freed, after_s=0.3)
    # Expired: renewal reports it and does not bring it back; nor can it be settled into a refund.
    assert await harness.renew(lost) == [lost]
    assert not await harness.settle(lost, tokens=0, cost=0)
    refused = await harness.acquire([tpd], tokens=100, cost=100)
    assert not refused.allowed
    assert [s.remaining for s in refused.statuses] == [50, 400]


async def test_renew_reports_every_reservation_that_is_not_pending(harness: Harness) -> None:
    capped = limits(max_concurrent=3)
    pending, settled, expired, unknown = (uuid.uuid4().hex for _ in range(4))
    assert (await harness.acquire([capped], reservation_id=pending, ttl_ms=600_000)).allowed
    assert (await harness.acquire([capped], reservation_id=settled)).allowed
    assert await harness.settle(settled)
    assert (await harness.acquire([capped], reservation_id=expired, ttl_ms=100)).allowed
    await harness.pass_time(0.3)
    assert await harness.renew(unknown, pending, settled, expired) == [unknown, settled, expired]
    assert await harness.renew() == []
    # Renewing what is gone created nothing: two of the three slots are free.
    assert (await harness.acquire([capped])).allowed
    assert (await harness.acquire([capped])).allowed
    assert not (await harness.acquire([capped])).allowed


async def test_spend_budget_admits_what_fits(harness: Harness) -> None:
    budget = limits((C, MONTH, 100_000))
    admitted = [(await harness.acquire([budget], cost=7_000)).allowed for _ in range(16)]
    assert admitted == [True] * 14 + [False] * 2


async def test_no_limits_is_allowed_and_settles(harness: Harness) -> None:
    rid = uuid.uuid4().hex
    decision = await harness.acquire([], tokens=10, reservation_id=rid)
    assert decision.allowed and decision.statuses == () and decision.retry_after_ms is None
    assert await harness.settle(rid, tokens=20)
    assert not await harness.settle(rid)
