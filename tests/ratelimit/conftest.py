"""Fixtures for the rate limit tests: one contract harness per backend, and request builders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from services.ratelimit.quotas import (
    AcquireRequest,
    Amounts,
    Decision,
    DescriptorLimits,
    Quota,
    Unit,
    Window,
    plan,
)
from services.ratelimit.storage import LimitStore
from services.ratelimit.storage.memory import MemoryStore
from services.ratelimit.storage.redis import RedisStore

# 2024-05-15 12:00:30 UTC: mid-minute, mid-day, mid-month.
START = 1_715_774_430.0


class FakeClock:
    """Epoch seconds that move only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """A store plus how time passes for it: a fake clock for memory, the real one for Redis."""

    name: str
    store: LimitStore
    clock: FakeClock | None
    redis: Redis | None = None
    prefix: str = ""

    async def acquire(
        self,
        limits: list[DescriptorLimits],
        *,
        requests: int = 1,
        tokens: int = 0,
        cost: int = 0,
        reservation_id: str | None = None,
        ttl_ms: int = 60_000,
    ) -> Decision:
        request = AcquireRequest(
            reservation_id or uuid.uuid4().hex, tuple(limits), Amounts(requests, tokens, cost), ttl_ms
        )
        return await self.store.acquire(plan(request))

    async def settle(self, reservation_id: str, requests: int = 1, tokens: int = 0, cost: int = 0) -> bool:
        return await self.store.settle(reservation_id, Amounts(requests, tokens, cost))

    async def renew(self, *reservation_ids: str, ttl_ms: int = 60_000) -> list[str]:
        return await self.store.renew(list(reservation_ids), ttl_ms)

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass for the store: the fake clock moves, or real time goes by for Redis
        (whose clock cannot be moved; callers keep this short)."""
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def lose_counters(self) -> None:
        """Drop every counter, as Redis eviction would (reservations and slots stay)."""
        if isinstance(self.store, MemoryStore):
            self.store._counters.clear()
            return
        assert self.redis is not None
        async for key in self.redis.scan_iter(match=f"{self.prefix}c:*"):
            await self.redis.delete(key)

    async def eventually(self, check: Callable[[], Awaitable[bool]], after_s: float) -> None:
        """Assert ``check`` becomes true once ``after_s`` passed: by moving the fake clock, or by
        polling Redis (bounded) since its clock cannot be moved."""
        if self.clock is not None:
            self.clock.advance(after_s)
            assert await check()
            return
        for _ in range(250):
            if await check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not true within 5 s (expected after {after_s} s)")


def limits(
    *quotas: tuple[Unit, Window, int], key: str | None = None, max_concurrent: int | None = None
) -> DescriptorLimits:
    """One descriptor ({key: <unique>} unless given) with the quotas (unit, window, limit)."""
    descriptor = (("key", key or uuid.uuid4().hex),)
    return DescriptorLimits(descriptor, tuple(Quota(u, w, n) for u, w, n in quotas), max_concurrent)


def redis_store(redis_url: str) -> tuple[RedisStore, Redis, str]:
    """A Redis store under a prefix of its own, so tests sharing the server never meet."""
    client, prefix = Redis.from_url(redis_url), f"test:{uuid.uuid4().hex}:"
    return RedisStore(client, prefix=prefix), client, prefix


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The contract harness, once per backend."""
    if request.param == "memory":
        clock = FakeClock()
        yield Harness("memory", MemoryStore(clock), clock)
        return
    store, client, prefix = redis_store(request.getfixturevalue("redis_url"))
    yield Harness("redis", store, None, client, prefix)
    await store.close()
