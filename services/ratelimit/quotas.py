"""Quota decisions: calendar windows, the counters a request touches, and the verdict.

Values made once per quota per request are NamedTuples: they build and hash several times faster
than frozen dataclasses, and this runs on every request.

Pure: no protobuf, no I/O, no clock of its own (callers pass ``now``). Both storage backends use
these functions, so the in-memory backend and the Redis backend answer the same way. The Redis Lua
script repeats :func:`admits` and :func:`window_bounds`, because there the check must run inside
Redis to be atomic; the contract tests hold the two to the same behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import NamedTuple
from urllib.parse import quote

COUNTER_GRACE_S = 60
"""Counters live this long past their window's end, so a late Settle still finds them."""

CONCURRENCY_RETRY_MS = 1000
"""The wait suggested after a concurrency refusal: slots free as soon as a request finishes."""

MAX_TTL_MS = 7 * 86_400_000
"""The longest reservation TTL accepted (Lua prints larger millisecond counts in exponent form)."""

MAX_RENEWALS = 10_000
"""The most reservations one RenewLeases call may name (one Lua script runs over all of them)."""

MAX_AMOUNT = 2**53
"""The largest amount or actual accepted; counters are exact integers up to here (Lua numbers are doubles)."""


class Unit(IntEnum):
    """What a quota counts."""

    REQUESTS = 1
    TOKENS = 2
    COST_MICRO_USD = 3


class Window(IntEnum):
    """A calendar period in UTC over which a quota counts."""

    MINUTE = 1
    DAY = 2
    MONTH = 3


Descriptor = tuple[tuple[str, str], ...]
"""What quotas apply to: ordered (key, value) entries, e.g. (("tenant", "acme"), ("model", "m"))."""


class Quota(NamedTuple):
    """At most ``limit`` units per window; 0 allows nothing."""

    unit: Unit
    window: Window
    limit: int


@dataclass(frozen=True, slots=True)
class DescriptorLimits:
    """The quotas of one descriptor, and its cap on reservations in flight (None: no cap)."""

    descriptor: Descriptor
    quotas: tuple[Quota, ...]
    max_concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class Amounts:
    """Units one request consumes (an estimate at Acquire, the actual at Settle)."""

    requests: int = 0
    tokens: int = 0
    cost_micro_usd: int = 0

    def of(self, unit: Unit) -> int:
        """The amount of ``unit``."""
        return self.by_unit()[unit]

    def by_unit(self) -> tuple[int, int, int, int]:
        """The amounts indexed by :class:`Unit` value (index 0 unused), for hot loops."""
        return (0, self.requests, self.tokens, self.cost_micro_usd)


@dataclass(frozen=True, slots=True)
class AcquireRequest:
    """Reserve ``amounts`` on every quota of every descriptor, or on none."""

    reservation_id: str
    limits: tuple[DescriptorLimits, ...]
    amounts: Amounts
    ttl_ms: int
    """How long the reservation holds its concurrency slot (and can be settled) if never settled;
    stores need 1..MAX_TTL_MS (the limiter puts the configured default in place of 0)."""


class Counter(NamedTuple):
    """One counter a request touches: a descriptor's unit over a window (the window start is added
    by the backend from its own clock)."""

    descriptor_id: str
    unit: Unit
    window: Window


class QuotaRef(NamedTuple):
    """A requested quota and the index of its counter in :attr:`Plan.counters`."""

    descriptor: Descriptor
    quota: Quota
    counter: int


class Slot(NamedTuple):
    """A descriptor's concurrency cap."""

    descriptor: Descriptor
    descriptor_id: str
    cap: int


@dataclass(frozen=True, slots=True)
class Plan:
    """An Acquire reduced to distinct counters and slots; quotas keep the request's order."""

    request: AcquireRequest
    counters: tuple[Counter, ...]
    quotas: tuple[QuotaRef, ...]
    slots: tuple[Slot, ...]


class Outcome(IntEnum):
    """How a backend answered an Acquire (the numbers are what the Lua script returns)."""

    REFUSED = 0
    ALLOWED = 1
    REPLAYED = 2
    """The reservation already exists: nothing counted again, answered as allowed."""


class QuotaStatus(NamedTuple):
    """One quota after a decision."""

    descriptor: Descriptor
    quota: Quota
    remaining: int
    reset_after_ms: int
    exceeded: bool


class SlotStatus(NamedTuple):
    """A concurrency cap that refused a request: ``in_flight`` reservations already hold it."""

    descriptor: Descriptor
    cap: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to an Acquire. When ``allowed`` is false nothing was reserved."""

    allowed: bool
    statuses: tuple[QuotaStatus, ...] = ()
    refused_slots: tuple[SlotStatus, ...] = ()
    retry_after_ms: int | None = None
    degraded: bool = False
    epoch: str = ""
    """The generation of the counters that decided (see :attr:`LimitStore.epoch`); empty when unknown."""


# Characters that quote(..., safe="") leaves alone; most keys and values have nothing else.
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def _escape(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else quote(text, safe="")


def descriptor_id(descriptor: Descriptor) -> str:
    """A descriptor's identity as text; escaping keeps it unambiguous and free of ':' and '{'."""
    return "&".join(f"{_escape(key)}={_escape(value)}" for key, value in descriptor)


def window_bounds(window: Window, now_s: int) -> tuple[int, int]:
    """The start and end (epoch seconds, end exclusive) of the UTC calendar window holding ``now_s``."""
    if window is Window.MINUTE:
        start = now_s - now_s % 60
        return start, start + 60
    if window is Window.DAY:
        start = now_s - now_s % 86400
        return start, start + 86400
    moment = datetime.fromtimestamp(now_s, tz=UTC)
    first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    following = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return int(first.timestamp()), int(following.timestamp())


class WindowCache:
    """:func:`window_bounds` at one moment, each window computed once."""

    __slots__ = ("_bounds", "_now_s")

    def __init__(self, now_s: int) -> None:
        self._now_s = now_s
        self._bounds: dict[Window, tuple[int, int]] = {}

    def get(self, window: Window) -> tuple[int, int]:
        """The (start, end) of ``window`` at this moment."""
        found = self._bounds.get(window)
        if found is None:
            found = self._bounds[window] = window_bounds(window, self._now_s)
        return found


def plan(request: AcquireRequest) -> Plan:
    """The distinct counters and slots of ``request``.

    A counter named twice (the same descriptor, unit and window under two quotas or two identical
    descriptors) is counted once and checked against every limit given for it; a descriptor capped
    twice keeps the lower cap.
    """
    counters: dict[Counter, int] = {}
    refs: list[QuotaRef] = []
    slots: dict[str, Slot] = {}
    for limits in request.limits:
        ident = descriptor_id(limits.descriptor)
        for quota in limits.quotas:
            index = counters.setdefault(Counter(ident, quota.unit, quota.window), len(counters))
            refs.append(QuotaRef(limits.descriptor, quota, index))
        cap = limits.max_concurrent
        if cap is not None:
            known = slots.get(ident)
            if known is None or cap < known.cap:
                slots[ident] = Slot(limits.descriptor, ident, cap)
    return Plan(request, tuple(counters), tuple(refs), tuple(slots.values()))


def admits(plan: Plan, used: Sequence[int], in_flight: Sequence[int]) -> bool:
    """Whether every quota has room (``used + amount <= limit``) and every slot is free.

    A quota whose unit the request does not consume (amount 0) cannot refuse.
    """
    amounts = plan.request.amounts.by_unit()
    for ref in plan.quotas:
        amount = amounts[ref.quota.unit]
        if amount > 0 and used[ref.counter] + amount > ref.quota.limit:
            return False
    return all(count < slot.cap for slot, count in zip(plan.slots, in_flight, strict=True))


def decide(plan: Plan, *, outcome: Outcome, now_ms: int, used: Sequence[int], in_flight: Sequence[int]) -> Decision:
    """The decision a backend reached, with a status per quota.

    ``used`` and ``in_flight`` are the values before the decision (for a replay: the current ones,
    which already include the reservation). ``retry_after_ms`` is the longest wait among the quotas
    that refused (until their window ends) and :data:`CONCURRENCY_RETRY_MS` for a full slot.
    """
    amounts = plan.request.amounts.by_unit()
    bounds = WindowCache(now_ms // 1000)
    statuses: list[QuotaStatus] = []
    retry_ms: int | None = None
    for ref in plan.quotas:
        quota = ref.quota
        amount = amounts[quota.unit]
        before = used[ref.counter]
        reset_ms = bounds.get(quota.window)[1] * 1000 - now_ms
        exceeded = outcome is Outcome.REFUSED and amount > 0 and before + amount > quota.limit
        after = before + amount if outcome is Outcome.ALLOWED else before
        statuses.append(QuotaStatus(ref.descriptor, quota, max(0, quota.limit - after), reset_ms, exceeded))
        if exceeded:
            retry_ms = max(retry_ms or 0, reset_ms)
    refused_slots: tuple[SlotStatus, ...] = ()
    if outcome is Outcome.REFUSED:
        refused_slots = tuple(
            SlotStatus(slot.descriptor, slot.cap, count)
            for slot, count in zip(plan.slots, in_flight, strict=True)
            if count >= slot.cap
        )
        if refused_slots:
            retry_ms = max(retry_ms or 0, CONCURRENCY_RETRY_MS)
    return Decision(
        allowed=outcome is not Outcome.REFUSED,
        statuses=tuple(statuses),
        refused_slots=refused_slots,
        retry_after_ms=retry_ms,
    )
