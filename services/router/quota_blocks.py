"""Quota blocks: one Acquire reserves several requests' worth of quota, served locally, settled once.

Per descriptor set (the exact ``limits`` of a request: its tenant, key and model descriptors with
their quotas) this router holds at most one active block: a ratelimit reservation of ``k`` times a
request's estimate (requests, tokens, spend). A request whose estimate fits what the block has left
takes it locally (no RPC); when it finishes, what it really used replaces its estimate in the block,
so the unused part serves later requests. A retired block (exhausted, past ``max_age_s``, at the
earliest window end of its quotas, or dropped) is settled with the sum of what its requests used, in
one Settle, once the last of them finished. When a block's unused share falls under
``refill_below``, the next block is reserved in the background so that requests do not wait for it.

Exactness. The service counts a block at its full size until it is settled, and a block is admitted
by the same atomic Acquire as a request, so the counters never show less than what was served:
- sizing: ``k`` is at most ``headroom_fraction`` of every quota's remaining headroom (as the last
  answer of the service said) over the estimate, capped at ``max_requests``; below ``min_requests``
  (near a limit) requests reserve one at a time, exactly as without blocks. So N routers can hold
  at most N blocks of a shrinking share, and the last requests before a limit are decided singly;
- a refused block is never a refusal: the request then makes its own Acquire, whose answer (429,
  ``retry_after``, statuses, headers) is the one it would have had without blocks;
- a block never spans a window end: it stops admitting at the earliest ``reset_after`` of its
  quotas (counted from before the Acquire was sent), so usage after the boundary counts in the new
  window; requests admitted before it settle into the old window, as single reservations do;
- restarts: each AcquireResponse names the counters' ``epoch``; a new one drops every block made
  under the old (its reservation is gone with the counters). A block is also dropped when its
  lease is reported lost, and none is used while the channel to the service is not READY. A block
  admits for at most ``max_age_s`` (1 s) after its Acquire without contact with the service.
- an answer over its estimate (an upstream that ignores max_tokens, a stream that grew) retires its
  block at once: the block settles as soon as its requests in flight are done, so the excess
  reaches the counters about when a single reservation's settlement would have brought it;
- not leased: descriptors with a concurrency cap (slots are per request), check-only admission,
  stream extensions, and requests whose estimate is over four times the block's per-request one.

Worst case. Without counter loss, no more than without blocks: a block is reserved before it serves
and settled with the true sum (an answer over its estimate overshoots as it would alone). When the
service loses its counters (a memory store's process restarted, Redis restarted empty), the rebuild
from the ledger counts every request whose usage reached the ledger; what a block admitted after
that and before the router saw the new epoch or the block's age ran out is not in the rebuilt
counters: at most one block per router and descriptor set (<= ``headroom_fraction`` of the headroom,
<= ``max_requests``), admitted within ``max_age_s`` of the block's Acquire. The rebuild waits
``ratelimit.rebuild_grace_s`` (2 s > ``max_age_s``) after it sees the loss (at run time when Redis
lost them, at start in a memory store's new process), so blocks made before it stopped admitting
before the ledger is summed, and their requests' usage is in it.

Headers (an approximation, documented): for a request served from a block, ``x-ratelimit-remaining-*``
is what the service reported when it reserved the block, plus the block's unused part, minus what
the block's requests consumed so far (their estimates, or actuals once finished), never above the
lowest value this block showed before (monotone) nor below 0. It does not see other routers' use
since the block was reserved (at most ``max_age_s`` ago): that is the approximation. The reset is
the service's ``reset_after`` less the time elapsed since the Acquire was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from prometheus_client import Counter

from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import QuotaBlocksConfig
from services.router import quotas
from services.router.background import BackgroundTasks
from services.router.leases import Leases

log = logging.getLogger(__name__)

BLOCK_PREFIX = "blk:"
"""Reservation ids of blocks start with this (requests' ids start with their request id)."""

LARGE_ESTIMATE_FACTOR = 4
"""A request estimated above this many times the block's per-request estimate reserves alone."""

MAX_SLOTS = 10_000
"""Descriptor sets remembered at most; past it, the idle ones are forgotten."""

_UNIT_INDEX = {quota_pb2.UNIT_REQUESTS: 0, quota_pb2.UNIT_TOKENS: 1, quota_pb2.UNIT_COST_MICRO_USD: 2}
_HEADER_UNITS = (quota_pb2.UNIT_REQUESTS, quota_pb2.UNIT_TOKENS)

ADMISSIONS = Counter(
    "gateway_router_quota_admissions_total",
    "Admissions with quota, by how the quota was reserved: from a block (no RPC) or by the request's own Acquire.",
    ["path"],
)
BLOCK_RPCS = Counter(
    "gateway_router_quota_block_rpcs_total",
    "Ratelimit calls made for quota blocks (block Acquire, block Settle).",
    ["rpc"],
)
# Bound once: labels() checks and locks on every call, and one of these counts every request.
_FROM_BLOCK = ADMISSIONS.labels("block")
_SINGLE = ADMISSIONS.labels("single")

Units = tuple[int, int, int]
"""Requests, tokens and micro-USD, in that order."""


def _units(amounts: ratelimit_pb2.Amounts) -> Units:
    return (amounts.requests, amounts.tokens, amounts.cost_micro_usd)


@dataclass(frozen=True, slots=True)
class _Shown:
    """One header-bearing quota of a block, as the service reported it."""

    index: int
    """The quota's unit as an index into :data:`Units`."""
    unit_name: str
    limit: int
    remaining: int
    """Remaining once the block was reserved (the block counted in full)."""
    reset_s: float
    """Time to the window's end, from when the block's Acquire was sent."""


@dataclass(eq=False, slots=True)
class _Block:
    slot: _Slot
    """The descriptor set's state the block belongs to."""
    reservation_id: str
    amounts: Units
    per_request: Units
    """The estimate the block was sized by."""
    epoch: str
    sent: float
    deadline: float
    shown: tuple[_Shown, ...]
    used: list[int] = field(default_factory=lambda: [0, 0, 0])
    """Estimates of requests in flight plus actuals of those finished."""
    actual: list[int] = field(default_factory=lambda: [0, 0, 0])
    """Actuals of the requests finished: what the block settles with."""
    lowest: dict[int, int] = field(default_factory=dict)
    """The lowest remaining shown per header quota (by position in ``shown``): monotone headers."""
    outstanding: int = 0
    open: bool = True
    lost: bool = False
    """The service no longer holds the reservation: nothing to settle."""
    extensions: list[str] = field(default_factory=list)
    """Stream extensions of the block's requests, settled at zero after the block."""
    timer: asyncio.TimerHandle | None = None

    def fits(self, estimate: Units) -> bool:
        used, amounts = self.used, self.amounts
        return (
            used[0] + estimate[0] <= amounts[0]
            and used[1] + estimate[1] <= amounts[1]
            and used[2] + estimate[2] <= amounts[2]
        )

    def unused_share(self) -> float:
        return min((a - u) / a for a, u in zip(self.amounts, self.used, strict=True) if a > 0)


@dataclass(eq=False, slots=True)
class _Slot:
    """What this router knows of one descriptor set."""

    active: _Block | None = None
    standby: _Block | None = None
    pending: asyncio.Task[None] | None = None
    headroom: tuple[tuple[int, int], ...] | None = None
    """(unit index, remaining) of every quota, from the service's last answer for this set."""
    headroom_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request's share of a block: its estimate, taken locally."""

    block: _Block
    estimate: Units
    headers: list[tuple[str, str]]
    """``x-ratelimit-*`` for the request (see the module docstring)."""


class QuotaBlocks:
    """The blocks of one router process."""

    def __init__(
        self,
        stub: ratelimit_pb2_grpc.RateLimitServiceAsyncStub,
        config: QuotaBlocksConfig,
        background: BackgroundTasks,
        leases: Leases | None = None,
        *,
        connected: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = stub
        self._config = config
        self._background = background
        self._leases = leases
        self._connected = connected
        self._clock = clock
        self._slots: dict[bytes, _Slot] = {}
        self._blocks: dict[str, _Block] = {}
        """Every block not yet settled, by reservation id."""
        self._epoch = ""
        self._stale_after_s = 10 * config.max_age_s
        if leases is not None:
            leases.on_lost(self._leases_lost)

    @staticmethod
    def applies(limits: Sequence[ratelimit_pb2.DescriptorLimits]) -> bool:
        """Whether requests on ``limits`` may be served from blocks: not with a concurrency cap,
        whose slots are held per request."""
        return not any(item.HasField("max_concurrent") for item in limits)

    @staticmethod
    def key(limits: Sequence[ratelimit_pb2.DescriptorLimits]) -> bytes:
        """The identity of a descriptor set: its descriptors and quotas, exactly."""
        return b"|".join(item.SerializeToString(deterministic=True) for item in limits)

    async def take(
        self, limits: Sequence[ratelimit_pb2.DescriptorLimits], estimate: ratelimit_pb2.Amounts, request_id: str
    ) -> Ticket | None:
        """``estimate`` from a block of ``limits``, or None: the request reserves on its own
        (make the usual Acquire, then :meth:`observe` its answer)."""
        if not self._connected():
            return None
        key = self.key(limits)
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= MAX_SLOTS:
                self._forget_idle()
            slot = self._slots[key] = _Slot()
        units = _units(estimate)
        ticket = self._take_local(slot, units)
        if ticket is None and slot.pending is None and self._size(slot, units):
            slot.pending = asyncio.get_running_loop().create_task(self._reserve(slot, list(limits), units, request_id))
        if ticket is None and slot.pending is not None:
            # Shielded: one request leaving does not cancel the block the others wait for.
            await asyncio.shield(slot.pending)
            ticket = self._take_local(slot, units)
        if ticket is None:
            return None
        _FROM_BLOCK.inc()
        self._refill(slot, list(limits), request_id)
        return ticket

    def observe(
        self, limits: Sequence[ratelimit_pb2.DescriptorLimits], response: ratelimit_pb2.AcquireResponse, sent: float
    ) -> None:
        """Learn the headroom (and the epoch) from the answer to a request's own Acquire."""
        _SINGLE.inc()
        self._observe_epoch(response.epoch)
        slot = self._slots.get(self.key(limits))
        if slot is not None:
            self._learn(slot, response, sent)

    def release(self, ticket: Ticket, actual: ratelimit_pb2.Amounts, extensions: Sequence[str] = ()) -> None:
        """The request finished: ``actual`` replaces its estimate in the block. ``extensions``
        (a stream's added reservations) are settled at zero after the block is."""
        block = ticket.block
        used, spent = block.used, block.actual
        over = False
        for index, value in enumerate(_units(actual)):
            used[index] += value - ticket.estimate[index]
            spent[index] += value
            over = over or value > ticket.estimate[index]
        block.outstanding -= 1
        block.extensions.extend(extensions)
        if over and block.open:
            # More than reserved (an upstream past max_tokens, a long stream): the service must
            # see it as soon as a single reservation's settlement would show it, not in max_age.
            self._retire(block)
        elif not block.open and block.outstanding == 0:
            self._settle(block)

    def clear(self) -> None:
        """Retire every block (shutdown: in-flight calls have ended; settlements follow)."""
        for slot in self._slots.values():
            if slot.pending is not None:
                slot.pending.cancel()
        for block in list(self._blocks.values()):
            self._retire(block)

    def __len__(self) -> int:
        return len(self._blocks)

    # -- internals ------------------------------------------------------------------------------

    def _take_local(self, slot: _Slot, units: Units) -> Ticket | None:
        now = self._clock()
        for block in (slot.active, slot.standby):
            if block is None:
                continue
            if not block.open or now >= block.deadline or block.epoch != self._epoch:
                self._retire(block)
                continue
            per = block.per_request
            if units[1] > per[1] * LARGE_ESTIMATE_FACTOR or units[2] > per[2] * LARGE_ESTIMATE_FACTOR:
                return None
            if block.fits(units):
                block.outstanding += 1
                used = block.used
                used[0] += units[0]
                used[1] += units[1]
                used[2] += units[2]
                return Ticket(block, units, self._headers(block, now))
            # Exhausted for a request its size: what is left goes back to the service.
            self._retire(block)
        return None

    def _headers(self, block: _Block, now: float) -> list[tuple[str, str]]:
        elapsed = now - block.sent
        items: list[tuple[str, int, int, float]] = []
        for position, shown in enumerate(block.shown):
            index = shown.index
            remaining = shown.remaining + block.amounts[index] - block.used[index]
            lowest = block.lowest.get(position)
            if lowest is not None and lowest < remaining:
                remaining = lowest
            remaining = max(0, min(remaining, shown.limit))
            block.lowest[position] = remaining
            items.append((shown.unit_name, shown.limit, remaining, max(0.0, shown.reset_s - elapsed)))
        return quotas.tightest_headers(items)

    def _size(self, slot: _Slot, units: Units) -> int:
        """How many requests of ``units`` a new block holds; 0: reserve singly (near a limit, or
        nothing recent is known of the headroom)."""
        headroom = slot.headroom
        if headroom is None or self._clock() - slot.headroom_at > self._stale_after_s:
            return 0
        config = self._config
        k = config.max_requests
        fraction = config.headroom_fraction
        for index, remaining in headroom:
            amount = units[index]
            if amount > 0:
                k = min(k, int(remaining * fraction) // amount)
        return k if k >= config.min_requests else 0

    def _refill(self, slot: _Slot, limits: list[ratelimit_pb2.DescriptorLimits], request_id: str) -> None:
        active = slot.active
        if active is None or slot.standby is not None or slot.pending is not None:
            return
        if active.unused_share() >= self._config.refill_below or not self._size(slot, active.per_request):
            return
        slot.pending = asyncio.get_running_loop().create_task(
            self._reserve(slot, limits, active.per_request, request_id)
        )

    async def _reserve(
        self, slot: _Slot, limits: list[ratelimit_pb2.DescriptorLimits], units: Units, request_id: str
    ) -> None:
        try:
            k = self._size(slot, units)
            if not k:
                return
            amounts = ratelimit_pb2.Amounts(requests=k * units[0], tokens=k * units[1], cost_micro_usd=k * units[2])
            reservation_id = f"{BLOCK_PREFIX}{uuid.uuid4().hex}"
            request = ratelimit_pb2.AcquireRequest(reservation_id=reservation_id, limits=limits, amounts=amounts)
            if self._leases is not None:
                request.reservation_ttl.CopyFrom(self._leases.lease)
            sent = self._clock()
            BLOCK_RPCS.labels("acquire").inc()
            try:
                response = await self._stub.Acquire(request, timeout=5.0, metadata=(("x-request-id", request_id),))
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
                # It may have been reserved all the same (a deadline, shutdown): give it back, or its
                # whole size would stay counted once its lease ran out.
                self._background.spawn(self._give_back(reservation_id))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                # The requests reserve on their own and meet the same failure there, as without blocks.
                log.debug("block acquire failed: %s", exc.code().name)
                return
            self._observe_epoch(response.epoch)
            self._learn(slot, response, sent)
            if not response.allowed:
                return
            self._install(slot, self._block(slot, reservation_id, amounts, units, response, sent))
        finally:
            slot.pending = None

    def _block(
        self,
        slot: _Slot,
        reservation_id: str,
        amounts: ratelimit_pb2.Amounts,
        units: Units,
        response: ratelimit_pb2.AcquireResponse,
        sent: float,
    ) -> _Block:
        shown: list[_Shown] = []
        deadline = sent + self._config.max_age_s
        for status in response.statuses:
            reset_s = status.reset_after.seconds + status.reset_after.nanos / 1e9
            # Never across a window end: measured from before the Acquire left, so it is early, never late.
            deadline = min(deadline, sent + reset_s)
            if status.quota.unit in _HEADER_UNITS:
                name = "requests" if status.quota.unit == quota_pb2.UNIT_REQUESTS else "tokens"
                index = _UNIT_INDEX[status.quota.unit]
                shown.append(_Shown(index, name, status.quota.limit, status.remaining, reset_s))
        return _Block(slot, reservation_id, _units(amounts), units, response.epoch, sent, deadline, tuple(shown))

    def _install(self, slot: _Slot, block: _Block) -> None:
        self._blocks[block.reservation_id] = block
        if self._leases is not None:
            # Held until settled: a block's requests (a long stream) may outlive one lease.
            self._leases.hold(block.reservation_id)
        delay = max(0.0, block.deadline - self._clock())
        block.timer = asyncio.get_running_loop().call_later(delay, self._retire, block)
        if slot.active is None or not slot.active.open:
            slot.active = block
        else:
            slot.standby = block

    def _learn(self, slot: _Slot, response: ratelimit_pb2.AcquireResponse, sent: float) -> None:
        if response.degraded:
            slot.headroom = None
            return
        slot.headroom = tuple(
            (_UNIT_INDEX.get(s.quota.unit, 0), max(0, s.remaining)) for s in response.statuses if s.quota.limit >= 0
        )
        slot.headroom_at = sent

    def _observe_epoch(self, epoch: str) -> None:
        if not epoch or epoch == self._epoch:
            return
        if self._epoch:
            dropped = [b for b in self._blocks.values() if b.epoch != epoch]
            if dropped:
                log.warning("the rate limit counters were lost and rebuilt: %d quota blocks dropped", len(dropped))
            for block in dropped:
                block.lost = True
                self._retire(block)
        self._epoch = epoch

    def _leases_lost(self, reservation_ids: Sequence[str]) -> None:
        for reservation_id in reservation_ids:
            block = self._blocks.get(reservation_id)
            if block is not None:
                block.lost = True
                self._retire(block)

    def _retire(self, block: _Block) -> None:
        """Stop admitting from ``block``; settle it once its last request finished."""
        if block.timer is not None:
            block.timer.cancel()
            block.timer = None
        block.open = False
        slot = block.slot
        if slot.active is block:
            slot.active, slot.standby = slot.standby, None
        elif slot.standby is block:
            slot.standby = None
        if block.outstanding == 0:
            self._settle(block)

    def _settle(self, block: _Block) -> None:
        if self._blocks.pop(block.reservation_id, None) is None:
            return  # settled already
        ids = (block.reservation_id, *block.extensions)
        if self._leases is not None:
            for reservation_id in ids:
                self._leases.release(reservation_id)
        if block.lost:
            # The counters that held it are gone; the extensions stay counted until they expire.
            return
        self._background.spawn(self._send_settle(block))

    async def _send_settle(self, block: _Block) -> None:
        actual = ratelimit_pb2.Amounts(requests=block.actual[0], tokens=block.actual[1], cost_micro_usd=block.actual[2])
        BLOCK_RPCS.labels("settle").inc()
        try:
            response = await self._stub.Settle(
                ratelimit_pb2.SettleRequest(reservation_id=block.reservation_id, actual=actual), timeout=5.0
            )
        except grpc.aio.AioRpcError as exc:
            # The reservation expires on its own; the block's full size stands until then.
            log.warning("settling a quota block failed: %s %s", exc.code().name, exc.details())
            return
        if not response.found:
            # Settling the extensions at zero would leave their usage counted nowhere.
            log.warning("a quota block was gone when settled; its %d extensions stay counted", len(block.extensions))
            return
        for extension in block.extensions:
            try:
                await self._stub.Settle(
                    ratelimit_pb2.SettleRequest(reservation_id=extension, actual=ratelimit_pb2.Amounts()), timeout=5.0
                )
            except grpc.aio.AioRpcError as exc:
                log.warning("settle failed: %s %s", exc.code().name, exc.details())

    async def _give_back(self, reservation_id: str) -> None:
        try:
            await self._stub.Settle(
                ratelimit_pb2.SettleRequest(reservation_id=reservation_id, actual=ratelimit_pb2.Amounts()), timeout=5.0
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("giving back a quota block failed: %s %s", exc.code().name, exc.details())

    def _forget_idle(self) -> None:
        idle = [k for k, s in self._slots.items() if s.active is None and s.standby is None and s.pending is None]
        for key in idle:
            del self._slots[key]
