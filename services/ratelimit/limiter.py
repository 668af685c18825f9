"""The service's operations over a store, with the Redis outage policy.

When the backend cannot be reached, Acquire does not fail: it answers ``degraded=True`` and, under
``fail_open``, allowed (nothing counted), or under ``fail_closed``, refused with a short
``retry_after``. Refusing with a decision rather than an UNAVAILABLE status keeps the answer data:
the router sees ``degraded`` and can tell "the limiter is down" (503) from "over the limit" (429).
Settle during an outage answers ``found=False``; the reservation then expires and its estimate
stands. Reservations live on leases (``ratelimit.lease_s``) that their router renews while the
request runs, so the slot of a router that died comes back within one lease; a renewal during an
outage fails rather than report the reservations as expired. Every backend failure is counted and
logged, at most one line per interval.

Counters the backend lost (Redis restarted empty) are rebuilt from the ledger before anything is
admitted again (:mod:`services.ratelimit.rebuild`); meanwhile Acquire refuses, degraded, under
either policy, since admitting on empty counters would let every budget be spent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from prometheus_client import Counter

from services.ratelimit.quotas import MAX_TTL_MS, AcquireRequest, Amounts, Decision, plan
from services.ratelimit.rebuild import Rebuilder
from services.ratelimit.storage import BackendUnavailable, CountersLost, LimitStore

log = logging.getLogger(__name__)

OUTAGE_RETRY_MS = 1000
"""The wait suggested when fail_closed refuses because the backend is unreachable."""

# Process-wide, like every Prometheus metric: one registration however many limiters a test builds.
BACKEND_ERRORS = Counter(
    "gateway_ratelimit_backend_errors_total",
    "Rate limit backend operations that failed because the backend was unreachable.",
    ["operation"],
)

OutagePolicy = Literal["fail_open", "fail_closed"]


class ThrottledLog:
    """Logs a recurring warning at most once per ``interval_s``, saying how many were suppressed."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        """Log now, or count the line as suppressed if one was logged within the interval."""
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" ({self._suppressed} similar suppressed in the last {self._interval_s:.0f}s)"
        self._logger.warning(message, *args)
        self._suppressed = 0
        self._next = now + self._interval_s


class Limiter:
    """Acquire and Settle over a :class:`LimitStore`, applying the outage policy."""

    def __init__(
        self,
        store: LimitStore,
        *,
        outage_policy: OutagePolicy,
        default_ttl_s: float,
        log_interval_s: float = 10.0,
        rebuilder: Rebuilder | None = None,
    ) -> None:
        self._store = store
        self._rebuilder = rebuilder
        self._policy = outage_policy
        self._default_ttl_ms = min(MAX_TTL_MS, max(1, int(default_ttl_s * 1000)))
        self._outage_log = ThrottledLog(log, log_interval_s)

    async def acquire(self, request: AcquireRequest) -> Decision:
        """Reserve on every quota or none; under an outage, the configured policy's answer."""
        if request.ttl_ms <= 0:
            request = replace(request, ttl_ms=self._default_ttl_ms)
        try:
            return await self._store.acquire(plan(request))
        except BackendUnavailable as exc:
            BACKEND_ERRORS.labels(operation="acquire").inc()
            self._outage_log.warning("rate limit backend unreachable, answering %s: %s", self._policy, exc)
            if self._policy == "fail_open":
                return Decision(allowed=True, degraded=True)
            return Decision(allowed=False, retry_after_ms=OUTAGE_RETRY_MS, degraded=True)
        except CountersLost as exc:
            BACKEND_ERRORS.labels(operation="counters_lost").inc()
            self._outage_log.warning("%s; refusing until rebuilt", exc)
            if self._rebuilder is not None:
                self._rebuilder.trigger()
            return Decision(allowed=False, retry_after_ms=OUTAGE_RETRY_MS, degraded=True)

    async def settle(self, reservation_id: str, actual: Amounts) -> bool:
        """Settle a reservation; False when unknown, expired, settled, or the backend is unreachable."""
        try:
            return await self._store.settle(reservation_id, actual)
        except BackendUnavailable as exc:
            BACKEND_ERRORS.labels(operation="settle").inc()
            self._outage_log.warning("rate limit backend unreachable, settlement dropped: %s", exc)
            return False

    async def renew(self, reservation_ids: Sequence[str], ttl_ms: int) -> list[str]:
        """Extend the leases of pending reservations (``ttl_ms`` <= 0: the default lease); returns
        the ids not pending. Raises :class:`BackendUnavailable`: the caller must not mistake an
        outage for expired reservations."""
        ttl_ms = ttl_ms if ttl_ms > 0 else self._default_ttl_ms
        try:
            return await self._store.renew(reservation_ids, ttl_ms)
        except BackendUnavailable as exc:
            BACKEND_ERRORS.labels(operation="renew").inc()
            self._outage_log.warning("rate limit backend unreachable, leases not renewed: %s", exc)
            raise

    async def wait_ready(self, max_delay_s: float = 2.0) -> None:
        """Return once the backend answers and its counters are rebuilt if they were lost, retrying
        with backoff (health stays NOT_SERVING meanwhile)."""
        delay = 0.05
        while True:
            try:
                await self._store.ping()
                break
            except BackendUnavailable as exc:
                self._outage_log.warning("waiting for the rate limit backend: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
        if self._rebuilder is not None:
            await self._rebuilder.rebuild_now()

    async def close(self) -> None:
        """Stop a pending rebuild and close the store."""
        if self._rebuilder is not None:
            await self._rebuilder.close()
        await self._store.close()
