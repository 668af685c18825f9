"""In-process counters: the embedded default, correct for exactly one replica.

Every operation runs without awaiting, so on one event loop it is atomic like the Redis script.
Expired windows, reservations and slots are dropped lazily and by a periodic sweep.

A new process starts with its counters lost. With ``require_restore`` (the service sets it when it
rebuilds from the ledger), Acquire raises :class:`CountersLost` until they are restored, as Redis
without its marker does: the gRPC server answers before the service is ready, and a router that
reconnected at once would otherwise be admitted on empty counters that the restore then raises to
the ledger's sum, losing what it admitted meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from services.ratelimit.quotas import (
    COUNTER_GRACE_S,
    Amounts,
    Decision,
    Outcome,
    Plan,
    Unit,
    Window,
    WindowCache,
    admits,
    decide,
)
from services.ratelimit.storage.base import CountersLost, RestoredCounter

_CounterKey = tuple[str, Unit, Window, int]
"""(descriptor id, unit, window, window start in epoch seconds)."""


@dataclass
class _Count:
    value: int
    expires_ms: int


class _Touched(NamedTuple):
    key: _CounterKey
    unit: Unit
    window_end_s: int


@dataclass(frozen=True, slots=True)
class _Reservation:
    amounts: Amounts
    counters: tuple[_Touched, ...]
    slots: tuple[str, ...]
    expires_ms: int


class MemoryStore:
    """Counters in a dict, with an injectable clock (epoch seconds) for tests."""

    def __init__(
        self, clock: Callable[[], float] = time.time, sweep_interval_s: float = 60.0, *, require_restore: bool = False
    ) -> None:
        self._clock = clock
        self._require_restore = require_restore
        self._sweep_ms = int(sweep_interval_s * 1000)
        self._next_sweep_ms = 0
        self._counters: dict[_CounterKey, _Count] = {}
        self._reservations: dict[str, _Reservation] = {}
        # descriptor id -> reservation id -> expiry (ms)
        self._in_flight: dict[str, dict[str, int]] = {}
        # A new process starts empty: its day and month counters come back from the ledger.
        self._restored = False
        # Counters live and die with this object: a new store is a new generation.
        self.epoch = uuid.uuid4().hex

    async def acquire(self, plan: Plan) -> Decision:
        """See :meth:`LimitStore.acquire`."""
        if self._require_restore and not self._restored:
            raise CountersLost("this rate limit process has not rebuilt its counters from the ledger yet")
        now_ms = self._now_ms()
        self._maybe_sweep(now_ms)
        bounds = WindowCache(now_ms // 1000)
        request = plan.request
        touched: list[_Touched] = []
        used: list[int] = []
        for counter in plan.counters:
            start, end = bounds.get(counter.window)
            key = (counter.descriptor_id, counter.unit, counter.window, start)
            touched.append(_Touched(key, counter.unit, end))
            used.append(self._value(key, now_ms))
        in_flight = [self._holding(slot.descriptor_id, now_ms) for slot in plan.slots]
        pending = self._reservations.get(request.reservation_id)
        if pending is not None and pending.expires_ms > now_ms:
            outcome = Outcome.REPLAYED
        elif admits(plan, used, in_flight):
            outcome = Outcome.ALLOWED
            self._reserve(plan, touched, now_ms)
        else:
            outcome = Outcome.REFUSED
        decision = decide(plan, outcome=outcome, now_ms=now_ms, used=used, in_flight=in_flight)
        return replace(decision, epoch=self.epoch)

    async def settle(self, reservation_id: str, actual: Amounts) -> bool:
        """See :meth:`LimitStore.settle`."""
        now_ms = self._now_ms()
        reservation = self._reservations.pop(reservation_id, None)
        if reservation is None or reservation.expires_ms <= now_ms:
            return False
        for touched in reservation.counters:
            delta = actual.of(touched.unit) - reservation.amounts.of(touched.unit)
            if delta == 0:
                continue
            count = self._counters.get(touched.key)
            if count is not None and count.expires_ms > now_ms:
                count.value = max(0, count.value + delta)
            elif delta > 0 and touched.window_end_s * 1000 > now_ms:
                # The estimate was 0 for this unit, so the window's counter was never created.
                expires_ms = (touched.window_end_s + COUNTER_GRACE_S) * 1000
                self._counters[touched.key] = _Count(delta, expires_ms)
        for ident in reservation.slots:
            holders = self._in_flight.get(ident)
            if holders is not None:
                holders.pop(reservation_id, None)
        return True

    async def renew(self, reservation_ids: Sequence[str], ttl_ms: int) -> list[str]:
        """See :meth:`LimitStore.renew`."""
        now_ms = self._now_ms()
        expires_ms = now_ms + ttl_ms
        missing: list[str] = []
        for reservation_id in reservation_ids:
            reservation = self._reservations.get(reservation_id)
            if reservation is None or reservation.expires_ms <= now_ms:
                missing.append(reservation_id)
                continue
            self._reservations[reservation_id] = replace(reservation, expires_ms=expires_ms)
            for ident in reservation.slots:
                holders = self._in_flight.get(ident)
                if holders is not None and reservation_id in holders:
                    holders[reservation_id] = expires_ms
        return missing

    async def ping(self) -> None:
        """Memory always answers."""

    async def counters_lost(self) -> bool:
        """See :meth:`LimitStore.counters_lost`: true until the first restore of this process."""
        return not self._restored

    async def restore(self, counters: Sequence[RestoredCounter]) -> bool:
        """See :meth:`LimitStore.restore`."""
        if self._restored:
            return False
        now_ms = self._now_ms()
        for c in counters:
            key = (c.descriptor_id, c.unit, c.window, c.window_start_s)
            if c.window_end_s * 1000 <= now_ms or self._value(key, now_ms) >= c.value:
                continue
            self._counters[key] = _Count(c.value, (c.window_end_s + COUNTER_GRACE_S) * 1000)
        self._restored = True
        return True

    async def close(self) -> None:
        """Nothing to release."""

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _value(self, key: _CounterKey, now_ms: int) -> int:
        count = self._counters.get(key)
        return count.value if count is not None and count.expires_ms > now_ms else 0

    def _holding(self, ident: str, now_ms: int) -> int:
        holders = self._in_flight.get(ident)
        if not holders:
            return 0
        for reservation_id in [r for r, expires_ms in holders.items() if expires_ms <= now_ms]:
            del holders[reservation_id]
        return len(holders)

    def _reserve(self, plan: Plan, touched: list[_Touched], now_ms: int) -> None:
        request = plan.request
        amounts = request.amounts.by_unit()
        for item in touched:
            amount = amounts[item.unit]
            if amount == 0:
                continue
            count = self._counters.get(item.key)
            if count is None or count.expires_ms <= now_ms:
                self._counters[item.key] = _Count(amount, (item.window_end_s + COUNTER_GRACE_S) * 1000)
            else:
                count.value += amount
        expires_ms = now_ms + request.ttl_ms
        for slot in plan.slots:
            self._in_flight.setdefault(slot.descriptor_id, {})[request.reservation_id] = expires_ms
        self._reservations[request.reservation_id] = _Reservation(
            request.amounts, tuple(touched), tuple(slot.descriptor_id for slot in plan.slots), expires_ms
        )

    def _maybe_sweep(self, now_ms: int) -> None:
        if now_ms < self._next_sweep_ms:
            return
        self._next_sweep_ms = now_ms + self._sweep_ms
        self._counters = {k: c for k, c in self._counters.items() if c.expires_ms > now_ms}
        self._reservations = {k: r for k, r in self._reservations.items() if r.expires_ms > now_ms}
        for ident in list(self._in_flight):
            if self._holding(ident, now_ms) == 0:
                del self._in_flight[ident]

    def size(self) -> tuple[int, int, int]:
        """How many counters, reservations and capped descriptors are held (for tests and debugging)."""
        return len(self._counters), len(self._reservations), len(self._in_flight)
