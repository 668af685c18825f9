"""QuotaBlocks against the real rate limit domain (memory store, fake clock) behind an in-process stub."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.config import QuotaBlocksConfig
from services.ratelimit.limiter import Limiter
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.storage.memory import MemoryStore
from services.router.background import BackgroundTasks
from services.router.quota_blocks import QuotaBlocks, Ticket

START = 1_800_000_000.0  # a minute start (divisible by 60)
assert START % 60 == 0


class Clock:
    def __init__(self) -> None:
        self.now = START + 1

    def __call__(self) -> float:
        return self.now


class Stub:
    """The RateLimitService's methods called in process, counted; ``store`` can be replaced (a restart)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: Counter[str] = Counter()
        self.restart()

    def restart(self) -> None:
        self.store = MemoryStore(clock=self.clock)
        self.servicer = RateLimitServicer(Limiter(self.store, outage_policy="fail_closed", default_ttl_s=30))

    async def Acquire(self, request: ratelimit_pb2.AcquireRequest, **_: Any) -> ratelimit_pb2.AcquireResponse:
        self.calls["Acquire"] += 1
        return await self.servicer.Acquire(request, None)  # type: ignore[arg-type]

    async def Settle(self, request: ratelimit_pb2.SettleRequest, **_: Any) -> ratelimit_pb2.SettleResponse:
        self.calls["Settle"] += 1
        return await self.servicer.Settle(request, None)  # type: ignore[arg-type]

    async def used(self, limits: list[ratelimit_pb2.DescriptorLimits]) -> list[int]:
        """Every quota's count now (an Acquire of nothing, not counted as a call)."""
        response = await self.servicer.Acquire(
            ratelimit_pb2.AcquireRequest(reservation_id=f"probe-{self.clock.now}", limits=limits),
            None,  # type: ignore[arg-type]
        )
        return [s.quota.limit - s.remaining for s in response.statuses]


def _limits(
    requests: int, tokens: int = 10**9, *, window: int = quota_pb2.WINDOW_DAY, cap: int | None = None
) -> list[ratelimit_pb2.DescriptorLimits]:
    item = ratelimit_pb2.DescriptorLimits(
        descriptor=ratelimit_pb2.Descriptor(entries=[ratelimit_pb2.DescriptorEntry(key="tenant", value="t")]),
        quotas=[
            quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, window=window, limit=requests),  # type: ignore[arg-type]
            quota_pb2.Quota(unit=quota_pb2.UNIT_TOKENS, window=window, limit=tokens),  # type: ignore[arg-type]
        ],
    )
    if cap is not None:
        item.max_concurrent = cap
    return [item]


ESTIMATE = ratelimit_pb2.Amounts(requests=1, tokens=100, cost_micro_usd=0)


class Admitter:
    """What the orchestrator does: a block's share, else the request's own Acquire (observed)."""

    def __init__(self, blocks: QuotaBlocks, stub: Stub, clock: Clock) -> None:
        self.blocks, self.stub, self.clock = blocks, stub, clock
        self.n = 0

    async def admit(
        self, limits: list[ratelimit_pb2.DescriptorLimits], estimate: ratelimit_pb2.Amounts = ESTIMATE
    ) -> tuple[Ticket | str | None, list[tuple[str, str]] | ratelimit_pb2.AcquireResponse]:
        ticket = await self.blocks.take(limits, estimate, "r")
        if ticket is not None:
            return ticket, ticket.headers
        self.n += 1
        request = ratelimit_pb2.AcquireRequest(reservation_id=f"single-{self.n}", limits=limits, amounts=estimate)
        response = await self.stub.Acquire(request)
        self.blocks.observe(limits, response, self.clock())
        return (request.reservation_id if response.allowed else None), response


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stub(clock: Clock) -> Stub:
    return Stub(clock)


@pytest.fixture
def background() -> BackgroundTasks:
    return BackgroundTasks()


def _blocks(stub: Stub, clock: Clock, background: BackgroundTasks, **config: Any) -> QuotaBlocks:
    return QuotaBlocks(stub, QuotaBlocksConfig(**config), background, clock=clock)  # type: ignore[arg-type]


async def test_requests_take_from_a_block_locally_and_return_what_they_did_not_use(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, refill_below=0.0)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(10_000)
    # Nothing known of the headroom yet: the first request reserves alone, and learns it.
    first, _ = await admitter.admit(limits)
    assert isinstance(first, str) and stub.calls["Acquire"] == 1
    tickets = [(await admitter.admit(limits))[0] for _ in range(10)]
    assert all(isinstance(t, Ticket) for t in tickets)
    assert stub.calls["Acquire"] == 2, "one Acquire reserved a block of 10 requests"
    assert await stub.used(limits) == [1 + 10, 100 + 10 * 100]
    # Each used 40 of its 100 tokens: 600 come back to the block, enough for 6 more... but the
    # block has no requests left, so the next request retires it and reserves the next block.
    for ticket in tickets:
        assert isinstance(ticket, Ticket)
        blocks.release(ticket, ratelimit_pb2.Amounts(requests=1, tokens=40))
    assert stub.calls["Settle"] == 0, "settlement is local until the block retires"
    nxt, _ = await admitter.admit(limits)
    assert isinstance(nxt, Ticket) and stub.calls["Acquire"] == 3
    await background.drain()
    assert stub.calls["Settle"] == 1, "the retired block settled once, with its requests' actual"
    # The single reservation (100) is unsettled; the first block settled at 10 x 40; the new one holds 10 x 100.
    assert await stub.used(limits) == [1 + 10 + 10, 100 + 400 + 1000]


async def test_what_a_request_did_not_use_serves_the_next_from_the_same_block(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    blocks = _blocks(stub, clock, background, max_requests=4, refill_below=0.0)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(10_000, tokens=10_000)
    await admitter.admit(limits)
    # A block of 4 requests of 100 tokens: 3 requests, then one whose estimate is 150 fits only
    # because the earlier ones gave back what they did not use.
    held = [(await admitter.admit(limits))[0] for _ in range(3)]
    for ticket in held:
        assert isinstance(ticket, Ticket)
        blocks.release(ticket, ratelimit_pb2.Amounts(requests=1, tokens=10))
    big, _ = await admitter.admit(limits, ratelimit_pb2.Amounts(requests=1, tokens=150))
    assert isinstance(big, Ticket) and stub.calls["Acquire"] == 2


async def test_the_next_block_is_reserved_ahead_of_need(stub: Stub, clock: Clock, background: BackgroundTasks) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, refill_below=0.5)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(10_000)
    await admitter.admit(limits)
    for _ in range(6):
        ticket, _ = await admitter.admit(limits)
        assert isinstance(ticket, Ticket)
    await asyncio.sleep(0)  # the refill started once under half was left; let it answer
    await asyncio.sleep(0)
    assert stub.calls["Acquire"] == 3, "a standby block was reserved in the background"
    acquires = stub.calls["Acquire"]
    for _ in range(8):  # 4 left in the first, then the standby: none waits for an Acquire
        ticket, _ = await admitter.admit(limits)
        assert isinstance(ticket, Ticket)
    assert stub.calls["Acquire"] <= acquires + 1  # at most the next refill, started ahead again


async def test_near_a_limit_blocks_shrink_and_then_every_request_reserves_alone(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    blocks = _blocks(stub, clock, background, max_requests=64, min_requests=4, headroom_fraction=0.1)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(100)
    sizes: list[int] = []
    admitted = 0
    while True:
        before = stub.calls["Acquire"]
        ticket, answer = await admitter.admit(limits)
        if ticket is None:
            break
        admitted += 1
        if isinstance(ticket, Ticket) and stub.calls["Acquire"] > before:
            sizes.append(ticket.block.amounts[0])
    assert admitted == 100, "exactly the limit"
    assert sizes and sizes[0] <= 10 and all(s >= 4 for s in sizes)
    assert sizes == sorted(sizes, reverse=True), f"blocks shrink with the headroom: {sizes}"
    assert isinstance(answer, ratelimit_pb2.AcquireResponse) and not answer.allowed


async def test_a_refused_block_leaves_the_request_its_own_acquire_and_its_exact_refusal(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, min_requests=2, headroom_fraction=1.0)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(20)
    await admitter.admit(limits)  # headroom 19 known
    # Another router takes 15 meanwhile: a block of 10 no longer fits, a single request does.
    other = ratelimit_pb2.AcquireRequest(
        reservation_id="other", limits=limits, amounts=ratelimit_pb2.Amounts(requests=15)
    )
    assert (await stub.Acquire(other)).allowed
    ticket, answer = await admitter.admit(limits)
    assert isinstance(ticket, str), "refused as a block, admitted singly"
    assert stub.calls["Acquire"] == 4  # single, other, refused block, single
    admitted = 2
    while ticket is not None:
        ticket, answer = await admitter.admit(limits)
        admitted += ticket is not None
    assert admitted == 20 - 15
    # The refusal is the service's own answer to the request's own Acquire.
    assert isinstance(answer, ratelimit_pb2.AcquireResponse)
    assert not answer.allowed and answer.retry_after.seconds > 0
    assert [s.exceeded for s in answer.statuses] == [True, False]
    assert (await stub.used(limits))[0] == 20


async def test_a_block_stops_at_the_window_end_and_later_usage_counts_in_the_new_window(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, max_age_s=5.0, refill_below=0.0)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(1000, window=quota_pb2.WINDOW_MINUTE)
    clock.now = START + 59.5  # half a second before the minute ends
    await admitter.admit(limits)
    ticket, _ = await admitter.admit(limits)
    assert isinstance(ticket, Ticket)
    assert ticket.block.deadline <= START + 60
    blocks.release(ticket, ratelimit_pb2.Amounts(requests=1, tokens=100))
    clock.now = START + 60.2  # the next minute: the old block must not serve it
    after, _ = await admitter.admit(limits)
    assert isinstance(after, Ticket) and after.block is not ticket.block, "a new block, in the new window"
    assert not ticket.block.open
    await background.drain()
    # The new minute holds only the new block: nothing of the old one's requests.
    assert await stub.used(limits) == [10, 10 * 100]


async def test_a_new_epoch_drops_every_block_of_the_old_counters(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, refill_below=0.0)
    admitter = Admitter(blocks, stub, clock)
    a, b = _limits(1000), _limits(1000, tokens=10**8)
    await admitter.admit(a)
    await admitter.admit(b)
    ticket_a, _ = await admitter.admit(a)
    ticket_b, _ = await admitter.admit(b)
    assert isinstance(ticket_a, Ticket) and isinstance(ticket_b, Ticket)
    stub.restart()  # the limiter restarted: its counters (and the blocks' reservations) are gone
    # The first answer of the new counters (to any request) names their epoch: every block is dropped.
    other, _ = await admitter.admit(_limits(500))
    assert isinstance(other, str)
    assert not ticket_a.block.open and not ticket_b.block.open
    for limits, old in ((a, ticket_a), (b, ticket_b)):
        again, _ = await admitter.admit(limits)
        assert not isinstance(again, Ticket) or again.block is not old.block
    blocks.release(ticket_a, ratelimit_pb2.Amounts(requests=1, tokens=1))
    settles = stub.calls["Settle"]
    await background.drain()
    assert stub.calls["Settle"] == settles, "a dropped block has nothing to settle"


async def test_a_block_admits_for_max_age_only(stub: Stub, clock: Clock, background: BackgroundTasks) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, max_age_s=1.0, refill_below=0.0)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(1000)
    await admitter.admit(limits)
    ticket, _ = await admitter.admit(limits)
    assert isinstance(ticket, Ticket)
    blocks.release(ticket, ratelimit_pb2.Amounts(requests=1, tokens=1))
    clock.now += 1.01
    nxt, _ = await admitter.admit(limits)
    assert isinstance(nxt, Ticket) and nxt.block is not ticket.block
    assert not ticket.block.open


async def test_concurrency_caps_and_a_lost_connection_bypass_blocks(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    assert not QuotaBlocks.applies(_limits(1000, cap=2))
    assert QuotaBlocks.applies(_limits(1000))
    up = True
    blocks = QuotaBlocks(
        stub,  # type: ignore[arg-type]
        QuotaBlocksConfig(max_requests=10),
        background,
        connected=lambda: up,
        clock=clock,
    )
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(1000)
    await admitter.admit(limits)
    assert isinstance((await admitter.admit(limits))[0], Ticket)
    up = False
    assert isinstance((await admitter.admit(limits))[0], str), "no local admission without the limiter"


async def test_headers_start_from_what_the_service_said_and_only_go_down(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, refill_below=0.0)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(1000)
    _, first = await admitter.admit(limits)
    assert isinstance(first, ratelimit_pb2.AcquireResponse)
    remaining = [dict((await admitter.admit(limits))[1])["x-ratelimit-remaining-requests"] for _ in range(3)]  # type: ignore[arg-type]
    # As if each had reserved alone: 999 after the first, then 998, 997, 996.
    assert remaining == ["998", "997", "996"]


async def test_an_answer_over_its_estimate_retires_its_block_so_the_excess_is_settled_soon(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, refill_below=0.0)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(1000, tokens=10**6)
    await admitter.admit(limits)
    ticket, _ = await admitter.admit(limits)
    assert isinstance(ticket, Ticket)
    blocks.release(ticket, ratelimit_pb2.Amounts(requests=1, tokens=700))  # an upstream past max_tokens
    assert not ticket.block.open
    await background.drain()
    # The single reservation's 100 plus the block settled at its one request's 700.
    assert await stub.used(limits) == [2, 800]


async def test_a_block_whose_lease_was_lost_stops_serving(
    stub: Stub, clock: Clock, background: BackgroundTasks
) -> None:
    class FakeLeases:
        lease = ratelimit_pb2.AcquireRequest().reservation_ttl

        def __init__(self) -> None:
            self.held: set[str] = set()
            self.lost: list[Any] = []

        def on_lost(self, callback: Any) -> None:
            self.lost.append(callback)

        def hold(self, reservation_id: str) -> None:
            self.held.add(reservation_id)

        def release(self, reservation_id: str) -> None:
            self.held.discard(reservation_id)

    leases = FakeLeases()
    leases.lease.FromMilliseconds(30_000)
    blocks = QuotaBlocks(stub, QuotaBlocksConfig(max_requests=10), background, leases, clock=clock)  # type: ignore[arg-type]
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(1000)
    await admitter.admit(limits)
    ticket, _ = await admitter.admit(limits)
    assert isinstance(ticket, Ticket) and leases.held == {ticket.block.reservation_id}
    [callback] = leases.lost
    callback([ticket.block.reservation_id])
    assert not ticket.block.open
    blocks.release(ticket, ratelimit_pb2.Amounts(requests=1, tokens=1))
    assert leases.held == set()
    settles = stub.calls["Settle"]
    await background.drain()
    assert stub.calls["Settle"] == settles, "nothing to settle: the service no longer holds it"


async def test_a_block_acquire_cut_short_is_given_back(stub: Stub, clock: Clock, background: BackgroundTasks) -> None:
    blocks = _blocks(stub, clock, background, max_requests=10, refill_below=0.0)
    admitter = Admitter(blocks, stub, clock)
    limits = _limits(1000)
    await admitter.admit(limits)
    answered = asyncio.Event()
    acquire = stub.Acquire

    async def reserved_then_stuck(request: ratelimit_pb2.AcquireRequest, **kwargs: Any) -> Any:
        response = await acquire(request, **kwargs)  # the service reserved it...
        answered.set()
        await asyncio.Event().wait()  # ...but the answer never arrives (shutdown cancels the wait)
        return response

    stub.Acquire = reserved_then_stuck  # type: ignore[method-assign]
    waiting = asyncio.create_task(blocks.take(limits, ESTIMATE, "r"))
    await answered.wait()
    assert (await stub.used(limits))[0] == 11
    blocks.clear()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await background.drain()
    assert (await stub.used(limits))[0] == 1, "the block's reservation was given back"
