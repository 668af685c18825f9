"""Per-credential windows and cooldowns: exact across two replicas on one Redis, and in memory."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from google.protobuf import duration_pb2
from redis.asyncio import Redis

from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2 as pb
from services.ratelimit.credentials import Candidate, CredentialSelector
from services.ratelimit.limiter import Limiter
from services.ratelimit.quotas import Amounts, Quota, Unit, Window
from services.ratelimit.storage.cooldown import Backoff, CooldownStore, MemoryCooldowns, RedisCooldowns
from services.ratelimit.storage.memory import MemoryStore
from services.ratelimit.storage.redis import RedisStore
from tests.ratelimit.conftest import FakeClock
from tests.ratelimit.test_replicas import replicas

if TYPE_CHECKING:
    from gateway.ratelimit.v1.ratelimit_pb2_grpc import RateLimitServiceAsyncStub as Stub

__all__ = ["replicas"]  # the module-scoped fixture: two `python -m services.ratelimit` on one Redis


def _candidate(limit: int, priority: int, unit: int = quota_pb2.UNIT_REQUESTS) -> pb.CredentialCandidate:
    return pb.CredentialCandidate(
        credential_id=f"cred_{uuid.uuid4().hex}",
        limits=[quota_pb2.Quota(unit=unit, window=quota_pb2.WINDOW_MINUTE, limit=limit)],  # type: ignore[arg-type]
        priority=priority,
    )


async def _burst(stubs: list[Stub], n: int, candidates: list[pb.CredentialCandidate], tokens: int = 0) -> list[str]:
    """``n`` concurrent AcquireCredential, alternating replicas; the chosen id of each ('' if none)."""
    calls = [
        stubs[i % len(stubs)].AcquireCredential(
            pb.AcquireCredentialRequest(
                reservation_id=uuid.uuid4().hex, candidates=candidates, estimated_tokens=tokens
            ),
            timeout=30,
        )
        for i in range(n)
    ]
    answers = await asyncio.gather(*calls)
    assert not any(a.degraded for a in answers)
    assert all(a.allowed == bool(a.credential_id) for a in answers)
    assert all(a.HasField("retry_after") for a in answers if not a.allowed)
    return [a.credential_id for a in answers]


@pytest.mark.redis
async def test_windows_are_exact_across_two_replicas(replicas: list[Stub]) -> None:
    # Given in reverse priority order: the best priority is used up first, then the next.
    low, high = _candidate(13, priority=5), _candidate(29, priority=1)
    chosen = await _burst(replicas, 120, [low, high])
    assert chosen.count(high.credential_id) == 29
    assert chosen.count(low.credential_id) == 13
    assert chosen.count("") == 120 - 42


@pytest.mark.redis
async def test_token_windows_are_exact_across_two_replicas(replicas: list[Stub]) -> None:
    only = _candidate(1_000, priority=0, unit=quota_pb2.UNIT_TOKENS)
    chosen = await _burst(replicas, 60, [only], tokens=70)
    assert chosen.count(only.credential_id) == 14  # 14 * 70 = 980 <= 1000 < 15 * 70


@pytest.mark.redis
async def test_cooldown_on_429_is_shared_by_replicas_and_reset_by_a_success(replicas: list[Stub]) -> None:
    a, b = _candidate(100, priority=0), _candidate(100, priority=1)
    first, second = replicas
    failure = await first.ReportCredentialFailure(
        pb.ReportCredentialFailureRequest(credential_id=a.credential_id, upstream_status=429), timeout=10
    )
    assert failure.consecutive_failures == 1
    # The other replica sees the cooldown at once and chooses the next credential.
    answer = await second.AcquireCredential(
        pb.AcquireCredentialRequest(reservation_id=uuid.uuid4().hex, candidates=[a, b]), timeout=10
    )
    assert answer.credential_id == b.credential_id
    assert list(answer.cooling_down_ids) == [a.credential_id]
    again = await second.ReportCredentialFailure(
        pb.ReportCredentialFailureRequest(credential_id=a.credential_id, upstream_status=429), timeout=10
    )
    assert again.consecutive_failures == 2
    # Exponential: 1 s after the first failure, 2 s after the second (reported a moment later).
    assert 1_000 <= again.cooldown_until_ms - failure.cooldown_until_ms <= 1_800
    states = await first.GetCredentialStates(pb.GetCredentialStatesRequest(credentials=[a, b]), timeout=10)
    assert [s.consecutive_failures for s in states.states] == [2, 0]
    assert states.states[0].cooldown_until_ms == again.cooldown_until_ms
    assert states.states[1].windows[0].remaining == 99
    # Both answered; none left: refused with the earliest cooldown end as the wait.
    await first.ReportCredentialFailure(
        pb.ReportCredentialFailureRequest(
            credential_id=b.credential_id, upstream_status=401, retry_after=duration_pb2.Duration(seconds=60)
        ),
        timeout=10,
    )
    none = await first.AcquireCredential(
        pb.AcquireCredentialRequest(reservation_id=uuid.uuid4().hex, candidates=[a, b]), timeout=10
    )
    assert not none.allowed and set(none.cooling_down_ids) == {a.credential_id, b.credential_id}
    assert none.retry_after.seconds <= 2  # A's cooldown (about 2 s), not B's 60 s
    # A success on A (settled on the other replica) ends its streak and its cooldown.
    await second.SettleCredential(
        pb.SettleCredentialRequest(reservation_id="unknown", succeeded_credential_id=a.credential_id),
        timeout=10,
    )
    states = await first.GetCredentialStates(pb.GetCredentialStatesRequest(credentials=[a]), timeout=10)
    assert states.states[0].consecutive_failures == 0 and states.states[0].cooldown_until_ms == 0


@pytest.fixture(params=["memory", "redis"])
async def selector(request: pytest.FixtureRequest) -> AsyncIterator[tuple[CredentialSelector, FakeClock | None]]:
    """A selector on each backend: memory on a fake clock, Redis on its own (real) clock."""
    backoff = Backoff(base_ms=1_000, cap_ms=8_000, forget_ms=60_000)
    cooldowns: CooldownStore
    if request.param == "memory":
        clock = FakeClock()
        limiter = Limiter(MemoryStore(clock), outage_policy="fail_closed", default_ttl_s=30)
        cooldowns = MemoryCooldowns(backoff, clock)
        yield CredentialSelector(limiter, cooldowns), clock
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = f"test:{uuid.uuid4().hex}:"
    limiter = Limiter(RedisStore(client, prefix=prefix), outage_policy="fail_closed", default_ttl_s=30)
    yield CredentialSelector(limiter, RedisCooldowns(client, backoff, prefix=prefix)), None
    await client.aclose()


def _cand(limit: int, priority: int) -> Candidate:
    return Candidate(f"cred_{uuid.uuid4().hex}", (Quota(Unit.REQUESTS, Window.DAY, limit),), priority)


async def test_concurrent_acquires_grant_exactly_the_limits(
    selector: tuple[CredentialSelector, FakeClock | None],
) -> None:
    sel, _ = selector
    a, b = _cand(7, 0), _cand(5, 1)
    choices = await asyncio.gather(*(sel.acquire(uuid.uuid4().hex, [b, a], 0, 60_000) for _ in range(40)))
    ids = [c.credential_id for c in choices]
    assert ids.count(a.credential_id) == 7 and ids.count(b.credential_id) == 5 and ids.count(None) == 28
    assert all(set(c.exhausted) == {a.credential_id, b.credential_id} for c in choices if c.credential_id is None)


async def test_settle_returns_unused_tokens_to_the_window(
    selector: tuple[CredentialSelector, FakeClock | None],
) -> None:
    sel, _ = selector
    cred = Candidate(f"cred_{uuid.uuid4().hex}", (Quota(Unit.TOKENS, Window.DAY, 100),))
    assert (await sel.acquire("r1", [cred], 80, 60_000)).credential_id == cred.credential_id
    assert (await sel.acquire("r2", [cred], 80, 60_000)).credential_id is None
    assert await sel.settle("r1", Amounts(requests=1, tokens=10), cred.credential_id)
    assert (await sel.acquire("r3", [cred], 80, 60_000)).credential_id == cred.credential_id
    [state] = await sel.states([cred])
    assert state.windows[0].remaining == 10


async def test_cooldown_doubles_up_to_the_cap_and_a_success_resets_it(
    selector: tuple[CredentialSelector, FakeClock | None],
) -> None:
    sel, _ = selector
    cred = _cand(100, 0)
    cooldowns = []
    for _ in range(6):
        state = await sel.fail(cred.credential_id, 0)
        cooldowns.append(state.until_ms - state.now_ms)
    assert cooldowns == [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]
    # Retry-After longer than the backoff wins.
    state = await sel.fail(cred.credential_id, 20_000)
    assert state.until_ms - state.now_ms == 20_000 and state.streak == 7
    assert (await sel.acquire(uuid.uuid4().hex, [cred], 0, 60_000)).cooling_down == (cred.credential_id,)
    await sel.settle("unknown", Amounts(), cred.credential_id)
    assert (await sel.acquire(uuid.uuid4().hex, [cred], 0, 60_000)).credential_id == cred.credential_id
    state = await sel.fail(cred.credential_id, 0)
    assert state.streak == 1 and state.until_ms - state.now_ms == 1_000


async def test_cooldown_ends_and_the_credential_is_chosen_again() -> None:
    clock = FakeClock()
    limiter = Limiter(MemoryStore(clock), outage_policy="fail_closed", default_ttl_s=30)
    sel = CredentialSelector(limiter, MemoryCooldowns(Backoff(base_ms=1_000, cap_ms=8_000, forget_ms=10_000), clock))
    a, b = _cand(100, 0), _cand(100, 1)
    await sel.fail(a.credential_id, 0)
    choice = await sel.acquire("r1", [a, b], 0, 60_000)
    assert choice.credential_id == b.credential_id and choice.cooling_down == (a.credential_id,)
    clock.advance(1.0)
    assert (await sel.acquire("r2", [a, b], 0, 60_000)).credential_id == a.credential_id
    # A streak is forgotten once its cooldown ended long enough ago.
    clock.advance(10.0)
    assert (await sel.fail(a.credential_id, 0)).streak == 1
