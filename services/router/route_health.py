"""What the router knows about each deployment's health, and the order it makes of it.

Outcomes reach two places: the circuit breakers (:mod:`services.router.breaker`), which take a
deployment out of the order for a cooldown after repeated failures and let one probe decide when
it comes back, and the moving averages the routing strategies rank by
(:class:`services.router.strategies.RouteStats`). An open deployment is never dropped: when every
candidate is open, they are all still tried, in the strategy's order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from services.router.breaker import Breakers, BreakerSettings, MemoryBreakers, State
from services.router.planner import Candidate
from services.router.strategies import RouteStats


class RouteHealth:
    """Breakers and observations, keyed by ``provider:model``."""

    def __init__(
        self,
        failures_to_trip: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        window_s: float = 60.0,
        probe_timeout_s: float = 30.0,
        breakers: Breakers | None = None,
        stats: RouteStats | None = None,
    ) -> None:
        settings = BreakerSettings(failures_to_trip, window_s, cooldown_s, probe_timeout_s)
        self.breakers: Breakers = breakers if breakers is not None else MemoryBreakers(settings, clock)
        self.stats = stats if stats is not None else RouteStats(clock=clock)

    def record_success(self, candidate: Candidate) -> None:
        """The deployment answered: its breaker closes."""
        self.breakers.record_success(candidate.id)
        self.stats.outcome(candidate, True)

    def record_failure(self, candidate: Candidate) -> None:
        """The deployment failed with a retryable error."""
        self.breakers.record_failure(candidate.id)
        self.stats.outcome(candidate, False)

    def is_healthy(self, candidate: Candidate) -> bool:
        """Whether the deployment's breaker is closed or half-open (it may be probed)."""
        return self.breakers.state(candidate.id) is not State.OPEN

    async def order(self, candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
        """The candidates with closed ones (and a half-open one this request may probe) first, then
        the rest, each group in its given order.

        A half-open deployment's probe is claimed here, once per request that would try it, so
        only one request at a time spends an attempt on a deployment that may still be down.
        """
        usable: list[Candidate] = []
        skipped: list[Candidate] = []
        for candidate in candidates:
            state = self.breakers.state(candidate.id)
            if state is State.CLOSED or (state is State.HALF_OPEN and await self.breakers.claim_probe(candidate.id)):
                usable.append(candidate)
            else:
                skipped.append(candidate)
        return (*usable, *skipped)
