"""Windows and decisions, with fake clocks; and the Lua calendar math agreeing with Python's."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from services.ratelimit.limiter import ThrottledLog
from services.ratelimit.quotas import (
    AcquireRequest,
    Amounts,
    DescriptorLimits,
    Quota,
    Unit,
    Window,
    descriptor_id,
    plan,
    window_bounds,
)
from services.ratelimit.storage.memory import MemoryStore
from services.ratelimit.storage.redis import WINDOW_LUA
from tests.ratelimit.conftest import FakeClock, Harness, limits


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


def test_calendar_windows() -> None:
    now = ts(2024, 2, 29, 23, 59, 59)
    assert window_bounds(Window.MINUTE, now) == (ts(2024, 2, 29, 23, 59), ts(2024, 3, 1))
    assert window_bounds(Window.DAY, now) == (ts(2024, 2, 29), ts(2024, 3, 1))
    assert window_bounds(Window.MONTH, now) == (ts(2024, 2, 1), ts(2024, 3, 1))
    assert window_bounds(Window.MONTH, ts(2023, 12, 31, 23, 59, 59)) == (ts(2023, 12, 1), ts(2024, 1, 1))
    assert window_bounds(Window.MONTH, ts(2024, 1, 1)) == (ts(2024, 1, 1), ts(2024, 2, 1))


def test_descriptor_ids_are_unambiguous() -> None:
    assert descriptor_id((("a", "b=c"),)) != descriptor_id((("a=b", "c"),))
    assert descriptor_id(
        (
            (
                "a",
                "b&c",
            ),
        )
    ) != descriptor_id((("a", "b"), ("c", "")))
    assert ":" not in descriptor_id((("tenant", "x:y"), ("model", "openai:gpt-4o")))
    assert descriptor_id((("tenant", "acme"), ("key", "k1"))) != descriptor_id((("key", "k1"), ("tenant", "acme")))


def test_plan_dedupes_counters_and_keeps_the_lowest_cap() -> None:
    descriptor = (("key", "k"),)
    twice = DescriptorLimits(descriptor, (Quota(Unit.TOKENS, Window.DAY, 5), Quota(Unit.TOKENS, Window.DAY, 9)), 4)
    again = DescriptorLimits(descriptor, (Quota(Unit.TOKENS, Window.MONTH, 50),), 2)
    result = plan(AcquireRequest("r", (twice, again), Amounts(1, 1, 0), 1000))
    assert len(result.counters) == 2
    assert [ref.counter for ref in result.quotas] == [0, 0, 1]
    assert [slot.cap for slot in result.slots] == [2]


async def test_memory_windows_roll_over_and_settle_stays_in_its_window() -> None:
    clock = FakeClock(ts(2024, 1, 31, 23, 59, 30))
    harness = Harness("memory", MemoryStore(clock), clock)
    key = uuid.uuid4().hex
    tpm = limits((Unit.TOKENS, Window.MINUTE, 1_000), (Unit.TOKENS, Window.MONTH, 5_000), key=key)
    early = uuid.uuid4().hex
    assert (await harness.acquire([tpm], tokens=900, reservation_id=early)).allowed
    refused = await harness.acquire([tpm], tokens=200)
    assert refused.retry_after_ms == 30_000

    clock.advance(30)  # 2024-02-01 00:00:00: a new minute and a new month
    late = await harness.acquire([tpm], tokens=700)
    assert [s.remaining for s in late.statuses] == [300, 4_300]
    assert [s.reset_after_ms for s in late.statuses] == [60_000, 29 * 86_400_000]

    # Settling the January reservation adjusts January's counters, not February's.
    assert await harness.settle(early, tokens=0)
    assert [s.remaining for s in (await harness.acquire([tpm], tokens=0)).statuses] == [300, 4_300]


async def test_memory_sweeps_what_expired() -> None:
    clock = FakeClock()
    store = MemoryStore(clock, sweep_interval_s=60)
    harness = Harness("memory", store, clock)
    await harness.acquire([limits((Unit.REQUESTS, Window.MINUTE, 5), max_concurrent=3)], ttl_ms=10_000)
    assert store.size() == (1, 1, 1)
    clock.advance(3600)
    await harness.acquire([])
    assert store.size() == (0, 1, 0)  # only the new (empty) reservation


async def test_lua_calendar_matches_python(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    probe = client.register_script(
        WINDOW_LUA
        + """
local out = {}
for i = 1, #ARGV, 2 do
  local s, e = bounds(ARGV[i + 1], tonumber(ARGV[i]))
  out[#out + 1] = s
  out[#out + 1] = e
end
return out
"""
    )
    moments = [
        ts(1970, 1, 1),
        ts(2000, 2, 29, 12),
        ts(2023, 12, 31, 23, 59, 59),
        ts(2024, 1, 1),
        ts(2024, 2, 29, 23, 59, 59),
        ts(2024, 3, 1),
        ts(2100, 2, 28, 6),
        ts(2100, 3, 1),
        *(ts(2025, month, day, 23, 59, 59) for month in range(1, 13) for day in (1, 28)),
        *(ts(2026, month, 1) - 1 for month in range(2, 13)),
    ]
    args: list[int] = []
    expected: list[int] = []
    for moment in moments:
        for window in Window:
            args += [moment, window.value]
            expected += window_bounds(window, moment)
    assert await probe(args=args) == expected
    await client.aclose()


def test_throttled_log_writes_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0)
    throttled = ThrottledLog(logging.getLogger("test.throttled"), interval_s=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for _ in range(5):
            throttled.warning("down: %s", "refused")
            clock.advance(1)
        clock.advance(10)
        throttled.warning("down: %s", "refused")
    assert [r.getMessage() for r in caplog.records] == [
        "down: refused",
        "down: refused (4 similar suppressed in the last 10s)",
    ]
