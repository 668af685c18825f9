"""Counters lost with their backend are rebuilt from the ledger, not reset, and nothing is admitted
on empty counters meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis

from services.ratelimit.credentials import Candidate, CredentialSelector, credential_descriptor
from services.ratelimit.limiter import Limiter
from services.ratelimit.quotas import (
    AcquireRequest,
    Amounts,
    Decision,
    DescriptorLimits,
    Quota,
    Unit,
    Window,
    descriptor_id,
    window_bounds,
)
from services.ratelimit.rebuild import LedgerUnavailable, LedgerUsage, Rebuilder, rebuilt_counters
from services.ratelimit.storage import RestoredCounter
from services.ratelimit.storage.cooldown import Backoff, MemoryCooldowns
from services.ratelimit.storage.memory import MemoryStore
from services.ratelimit.storage.redis import RedisStore

DAY_START, DAY_END = 1_715_731_200, 1_715_817_600  # 2024-05-15 UTC
MONTH_START, MONTH_END = 1_714_521_600, 1_717_200_000  # May 2024


class FakeLedger:
    """The ledger's answer per start time; unavailable until ``up``."""

    def __init__(self, rows_since: dict[str, list[LedgerUsage]], up: bool = True) -> None:
        self.rows_since = rows_since
        self.up = up
        self.calls: list[int] = []

    async def usage_since(self, start_s: int) -> list[LedgerUsage]:
        self.calls.append(start_s)
        if not self.up:
            raise LedgerUnavailable("metering: UNAVAILABLE")
        now = int(time.time())
        window = "day" if start_s == window_bounds(Window.DAY, now)[0] else "month"
        return self.rows_since[window]


def test_a_ledger_row_counts_against_its_tenant_its_key_and_its_key_and_model() -> None:
    rows = [LedgerUsage("acme", "k1", "gpt", 3, 900, 4_000), LedgerUsage("acme", "k2", "gpt", 1, 100, 500)]
    counters = rebuilt_counters([(Window.DAY, DAY_START, DAY_END, rows)])
    by_key = {(c.descriptor_id, c.unit): c.value for c in counters}

    tenant = descriptor_id((("tenant", "acme"),))
    key1 = descriptor_id((("tenant", "acme"), ("key", "k1")))
    model1 = descriptor_id((("tenant", "acme"), ("key", "k1"), ("model", "gpt")))
    assert by_key[(tenant, Unit.TOKENS)] == 1000
    assert by_key[(tenant, Unit.COST_MICRO_USD)] == 4_500
    assert by_key[(tenant, Unit.REQUESTS)] == 4
    assert by_key[(key1, Unit.TOKENS)] == 900
    assert by_key[(model1, Unit.COST_MICRO_USD)] == 4_000
    assert {(c.window, c.window_start_s, c.window_end_s) for c in counters} == {(Window.DAY, DAY_START, DAY_END)}


def test_a_row_served_by_a_tenant_credential_also_counts_against_that_credentials_windows() -> None:
    rows = [
        LedgerUsage("acme", "k1", "gpt", 3, 900, 4_000, "cred_a"),
        LedgerUsage("acme", "k2", "gpt", 2, 100, 500, "cred_a"),
        LedgerUsage("acme", "k1", "gpt", 5, 50, 60),
    ]
    counters = rebuilt_counters([(Window.MONTH, MONTH_START, MONTH_END, rows)])
    by_key = {(c.descriptor_id, c.unit): c.value for c in counters}

    credential = descriptor_id(credential_descriptor("cred_a"))
    assert by_key[(credential, Unit.REQUESTS)] == 5
    assert by_key[(credential, Unit.TOKENS)] == 1000
    # The global credential's row has no credential descriptor; the tenant counts all three.
    assert not [c for c in counters if "credential" in c.descriptor_id and "cred_a" not in c.descriptor_id]
    assert by_key[(descriptor_id((("tenant", "acme"),)), Unit.REQUESTS)] == 10


async def test_redis_restarted_empty_rebuilds_a_credentials_day_and_month_windows(redis: Redis) -> None:
    credential = f"cred_{uuid.uuid4().hex}"
    month = [LedgerUsage("acme", "k1", "gpt", 7, 700, 0, credential)]
    day = [LedgerUsage("acme", "k1", "gpt", 4, 400, 0, credential)]
    ledger = FakeLedger({"day": day, "month": month})
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(redis, prefix=prefix, require_marker=True)
    limiter = Limiter(
        store, outage_policy="fail_open", default_ttl_s=60, rebuilder=Rebuilder(store, ledger, grace_s=0.1)
    )
    selector = CredentialSelector(limiter, MemoryCooldowns(Backoff()))
    # 5 requests a day and 9 a month: the ledger's 4 today and 7 this month leave 1 and 2.
    candidate = Candidate(credential, (Quota(Unit.REQUESTS, Window.DAY, 5), Quota(Unit.REQUESTS, Window.MONTH, 9)))

    async def acquire() -> str | None:
        return (await selector.acquire(uuid.uuid4().hex, [candidate], 0, 60_000)).credential_id

    await limiter.wait_ready()
    assert await acquire() == credential
    assert await acquire() is None, "the day window was rebuilt from the ledger at start"

    # Redis comes back empty: every key of this store is gone, the marker with them.
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    assert await acquire() is None, "nothing is admitted on empty counters"
    for _ in range(250):
        if not await store.counters_lost():
            break
        await asyncio.sleep(0.02)
    assert not await store.counters_lost()

    # Rebuilt from the ledger (the reservation made before the loss never reached it): 4 of 5 today.
    assert await acquire() == credential
    assert await acquire() is None
    await limiter.close()


def _budget(tenant: str, limit_micro_usd: int) -> DescriptorLimits:
    return DescriptorLimits((("tenant", tenant),), (Quota(Unit.COST_MICRO_USD, Window.DAY, limit_micro_usd),))


async def _spend(limiter: Limiter, tenant: str, cost: int, limit: int) -> Decision:
    request = AcquireRequest(uuid.uuid4().hex, (_budget(tenant, limit),), Amounts(1, 0, cost), 60_000)
    return await limiter.acquire(request)


async def test_a_new_memory_store_starts_from_the_ledger_before_serving() -> None:
    spent = [LedgerUsage("acme", "k1", "gpt", 10, 5_000, 900_000)]
    ledger = FakeLedger({"day": spent, "month": spent})
    store = MemoryStore()
    limiter = Limiter(store, outage_policy="fail_open", default_ttl_s=60, rebuilder=Rebuilder(store, ledger, grace_s=0))
    await limiter.wait_ready()

    # $0.90 of a $1.00 day was spent before the restart: $0.20 more must not fit, $0.10 must.
    assert not (await _spend(limiter, "acme", 200_000, 1_000_000)).allowed
    assert (await _spend(limiter, "acme", 100_000, 1_000_000)).allowed
    assert len(ledger.calls) == 2  # month and day


async def test_a_limiter_starting_on_lost_counters_waits_the_grace_for_requests_in_flight() -> None:
    """A memory store's new process may replace one that died with requests in flight: their usage
    reaches the ledger after the new process started, and must be in the sum."""
    day: list[LedgerUsage] = []
    ledger = FakeLedger({"day": day, "month": day})
    store = MemoryStore(require_restore=True)
    limiter = Limiter(
        store, outage_policy="fail_open", default_ttl_s=60, rebuilder=Rebuilder(store, ledger, grace_s=0.5)
    )
    ready = asyncio.create_task(limiter.wait_ready())
    await asyncio.sleep(0.1)
    assert not ready.done() and ledger.calls == [], "the ledger is not summed before the grace ends"
    refused = await _spend(limiter, "acme", 1, 1_000_000)
    assert not refused.allowed and refused.degraded, "nothing is admitted during the grace"
    # The dead process's requests in flight finish now: $0.90 of a $1.00 day.
    day.append(LedgerUsage("acme", "k1", "gpt", 3, 300, 900_000))
    await asyncio.wait_for(ready, 5)

    assert not (await _spend(limiter, "acme", 200_000, 1_000_000)).allowed
    assert (await _spend(limiter, "acme", 100_000, 1_000_000)).allowed
    assert len(ledger.calls) == 2, "the Acquire during the grace joined the start's rebuild (month and day, once)"
    await limiter.close()


async def test_a_limiter_whose_counters_are_kept_starts_at_once(redis: Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(redis, prefix=prefix, require_marker=True)
    assert await store.restore([])  # a replica before this one rebuilt them: the marker is set
    ledger = FakeLedger({"day": [], "month": []})
    limiter = Limiter(
        store, outage_policy="fail_closed", default_ttl_s=60, rebuilder=Rebuilder(store, ledger, grace_s=30)
    )
    await asyncio.wait_for(limiter.wait_ready(), 5)
    assert ledger.calls == []
    await limiter.close()


async def test_waiting_for_the_ledger_keeps_the_service_unready() -> None:
    ledger = FakeLedger({"day": [], "month": []}, up=False)
    store = MemoryStore()
    limiter = Limiter(
        store,
        outage_policy="fail_open",
        default_ttl_s=60,
        rebuilder=Rebuilder(store, ledger, grace_s=0, retry_s=0.01),
    )
    ready = asyncio.create_task(limiter.wait_ready())
    await asyncio.sleep(0.1)
    assert not ready.done()
    ledger.up = True
    await asyncio.wait_for(ready, 5)


@pytest.fixture
async def redis(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


async def test_redis_restarted_empty_refuses_until_rebuilt_then_counts_from_the_ledger(redis: Redis) -> None:
    tenant = uuid.uuid4().hex
    spent = [LedgerUsage(tenant, "k1", "gpt", 10, 5_000, 900_000)]
    ledger = FakeLedger({"day": spent, "month": spent})
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(redis, prefix=prefix, require_marker=True)
    limiter = Limiter(
        store, outage_policy="fail_open", default_ttl_s=60, rebuilder=Rebuilder(store, ledger, grace_s=0.2)
    )
    await limiter.wait_ready()
    assert (await _spend(limiter, tenant, 50_000, 1_000_000)).allowed  # $0.95 now

    # Redis comes back empty: every key of this store is gone, the marker with them.
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)

    refused = await _spend(limiter, tenant, 10_000, 1_000_000)
    assert not refused.allowed and refused.degraded, "nothing is admitted on empty counters, even fail_open"
    for _ in range(250):
        if not await store.counters_lost():
            break
        await asyncio.sleep(0.02)
    assert not await store.counters_lost()
    # The ledger had $0.90 (the $0.05 reservation was never settled into it): $0.15 must not fit.
    assert not (await _spend(limiter, tenant, 150_000, 1_000_000)).allowed
    assert (await _spend(limiter, tenant, 100_000, 1_000_000)).allowed
    await limiter.close()


async def test_a_second_rebuild_never_lowers_counters_another_replica_restored(redis: Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(redis, prefix=prefix, require_marker=True)
    ident = descriptor_id((("tenant", "t"),))
    assert await store.restore([RestoredCounter(ident, Unit.TOKENS, Window.DAY, DAY_START, 4_000_000_000, 10)])
    assert not await store.restore([RestoredCounter(ident, Unit.TOKENS, Window.DAY, DAY_START, 4_000_000_000, 3)])
    assert int(await redis.get(f"{prefix}c:{ident}:2:2:{DAY_START}")) == 10
    await redis.aclose()


async def test_the_epoch_names_the_counters_generation_and_changes_when_they_are_rebuilt(redis: Redis) -> None:
    tenant = uuid.uuid4().hex
    ledger = FakeLedger({"day": [], "month": []})
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStore(redis, prefix=prefix, require_marker=True)
    limiter = Limiter(
        store, outage_policy="fail_closed", default_ttl_s=60, rebuilder=Rebuilder(store, ledger, grace_s=0.05)
    )
    await limiter.wait_ready()
    first, second = await _spend(limiter, tenant, 1, 10**6), await _spend(limiter, tenant, 1, 10**6)
    assert first.epoch and first.epoch == second.epoch, "one generation answers with one epoch"
    # A second replica on the same Redis shares the counters, so it names the same epoch.
    replica = Limiter(
        RedisStore(redis, prefix=prefix, require_marker=True), outage_policy="fail_closed", default_ttl_s=60
    )
    assert (await _spend(replica, tenant, 1, 10**6)).epoch == first.epoch

    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    assert (await _spend(limiter, tenant, 1, 10**6)).epoch == "", "no epoch while the counters are lost"
    for _ in range(250):
        if not await store.counters_lost():
            break
        await asyncio.sleep(0.02)
    rebuilt = await _spend(limiter, tenant, 1, 10**6)
    assert rebuilt.allowed and rebuilt.epoch and rebuilt.epoch != first.epoch
    await limiter.close()

    # A memory store is its own generation: a new process, a new epoch.
    one, two = MemoryStore(), MemoryStore()
    memory = [Limiter(s, outage_policy="fail_closed", default_ttl_s=60) for s in (one, two)]
    epochs = [(await _spend(m, tenant, 1, 10**6)).epoch for m in memory]
    assert all(epochs) and epochs[0] != epochs[1]
    assert (await _spend(memory[0], tenant, 1, 10**6)).epoch == epochs[0]
