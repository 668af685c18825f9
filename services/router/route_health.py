"""Which deployments have been failing lately, per router replica.

A deployment that fails with retryable errors several times in a row is tried last for a
cooldown, so requests stop paying a timeout for it before they fall back. It is never dropped:
when every candidate is unhealthy, they are all still tried, in their usual order. One success
makes it healthy again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.router.planner import Candidate


@dataclass
class _State:
    failures: int = 0
    unhealthy_until: float = 0.0


class RouteHealth:
    """Consecutive-failure tracking with a cooldown, keyed by ``provider:model``."""

    def __init__(self, failures_to_trip: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures_to_trip = failures_to_trip
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._states: dict[str, _State] = {}

    def record_success(self, candidate: Candidate) -> None:
        """The deployment answered: it is healthy."""
        self._states.pop(candidate.id, None)

    def record_failure(self, candidate: Candidate) -> None:
        """The deployment failed with a retryable error."""
        state = self._states.setdefault(candidate.id, _State())
        state.failures += 1
        if state.failures >= self._failures_to_trip:
            state.unhealthy_until = self._clock() + self._cooldown_s

    def is_healthy(self, candidate: Candidate) -> bool:
        """Whether the deployment is outside a cooldown."""
        state = self._states.get(candidate.id)
        return state is None or state.unhealthy_until <= self._clock()

    def order(self, candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
        """The candidates with healthy ones first, each group in its given order."""
        healthy = [c for c in candidates if self.is_healthy(c)]
        return (*healthy, *(c for c in candidates if c not in healthy))
