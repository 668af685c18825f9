"""Circuit breakers: open after N failures in a window, one probe when half-open, shared on Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.router.breaker import BreakerSettings, MemoryBreakers, RedisBreakers, State
from services.router.planner import Candidate
from services.router.route_health import RouteHealth

SETTINGS = BreakerSettings(failures=3, window_s=10, cooldown_s=30, probe_timeout_s=5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_opens_after_n_failures_within_the_window_only() -> None:
    clock = Clock()
    breakers = MemoryBreakers(SETTINGS, clock)
    breakers.record_failure("p:a")
    breakers.record_failure("p:a")
    clock.now += 11  # the first two fell out of the window
    breakers.record_failure("p:a")
    breakers.record_failure("p:a")
    assert breakers.state("p:a") is State.CLOSED
    breakers.record_failure("p:a")
    assert breakers.state("p:a") is State.OPEN
    assert not await breakers.claim_probe("p:a")  # open: nobody probes before the cooldown
    clock.now += 29.9
    assert breakers.state("p:a") is State.OPEN
    clock.now += 0.2
    assert breakers.state("p:a") is State.HALF_OPEN


async def test_half_open_lets_one_probe_decide() -> None:
    clock = Clock()
    breakers = MemoryBreakers(SETTINGS, clock)
    for _ in range(3):
        breakers.record_failure("p:a")
    clock.now += 31
    assert await breakers.claim_probe("p:a")
    assert not await breakers.claim_probe("p:a")  # one probe at a time
    # The probe fails: open again for a whole cooldown, at once (not after N more failures).
    breakers.record_failure("p:a")
    assert breakers.state("p:a") is State.OPEN
    clock.now += 31
    assert breakers.state("p:a") is State.HALF_OPEN
    assert await breakers.claim_probe("p:a")
    # A probe that never reports back frees the claim after probe_timeout_s.
    clock.now += 5.1
    assert await breakers.claim_probe("p:a")
    breakers.record_success("p:a")
    assert breakers.state("p:a") is State.CLOSED
    # Closed again with a clean count.
    breakers.record_failure("p:a")
    breakers.record_failure("p:a")
    assert breakers.state("p:a") is State.CLOSED


async def test_open_deployments_are_skipped_and_tried_only_when_nothing_else_is_left() -> None:
    clock = Clock()
    health = RouteHealth(3, 30, clock, window_s=10)
    a, b, c = Candidate("p", "a"), Candidate("p", "b"), Candidate("p", "c")
    for _ in range(3):
        health.record_failure(a)
    assert await health.order([a, b, c]) == (b, c, a)
    clock.now += 31
    # Half-open: the first request probes a in its usual place; the next one skips it.
    assert await health.order([a, b, c]) == (a, b, c)
    assert await health.order([a, b, c]) == (b, c, a)
    health.record_success(a)
    assert await health.order([a, b, c]) == (a, b, c)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.mark.redis
async def test_two_routers_share_breakers_through_redis(redis: Redis) -> None:
    settings = BreakerSettings(failures=3, window_s=10, cooldown_s=0.5, probe_timeout_s=5)
    one = RedisBreakers(redis, settings, poll_s=0.05, prefix="test:breaker:")
    two = RedisBreakers(redis, settings, poll_s=0.05, prefix="test:breaker:")
    one.start()
    two.start()
    try:
        # Failures seen by different routers add up.
        one.record_failure("p:a")
        two.record_failure("p:a")
        await one.flush()
        await two.flush()
        assert one.state("p:a") is State.CLOSED
        one.record_failure("p:a")
        await one.flush()
        assert one.state("p:a") is State.OPEN
        # The other router learns it from its poll, not from a request.
        await _until(lambda: two.state("p:a") is State.OPEN)
        await _until(lambda: one.state("p:a") is State.HALF_OPEN and two.state("p:a") is State.HALF_OPEN)
        # Exactly one probe across both routers.
        claims = await asyncio.gather(one.claim_probe("p:a"), two.claim_probe("p:a"))
        assert sorted(claims) == [False, True]
        prober = one if claims[0] else two
        other = two if claims[0] else one
        # The probe fails: open again everywhere.
        prober.record_failure("p:a")
        await prober.flush()
        assert prober.state("p:a") is State.OPEN
        await _until(lambda: other.state("p:a") is State.OPEN)
        await _until(lambda: one.state("p:a") is State.HALF_OPEN and two.state("p:a") is State.HALF_OPEN)
        assert await other.claim_probe("p:a")
        # This probe answers: closed everywhere.
        other.record_success("p:a")
        await other.flush()
        assert other.state("p:a") is State.CLOSED
        await _until(lambda: prober.state("p:a") is State.CLOSED)
        assert await redis.hgetall("test:breaker:tripped") == {}
    finally:
        await one.stop()
        await two.stop()


@pytest.mark.redis
async def test_a_closed_breaker_makes_no_redis_call_on_the_request_path(redis: Redis) -> None:
    breakers = RedisBreakers(redis, SETTINGS, poll_s=60, prefix="test:quiet:")
    await breakers.refresh()
    before = (await redis.info("stats"))["total_commands_processed"]
    health = RouteHealth(3, 30, breakers=breakers)
    a, b = Candidate("p", "a"), Candidate("p", "b")
    for _ in range(50):
        assert await health.order([a, b]) == (a, b)
        health.record_success(a)
    await breakers.flush()
    after = (await redis.info("stats"))["total_commands_processed"]
    assert after - before <= 2  # the two INFO calls themselves


async def _until(condition: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)
