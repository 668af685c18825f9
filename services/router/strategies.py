"""How an alias's deployments are ordered for one request, from what this router has observed.

``ordered`` keeps the configured order and ``weighted`` draws one by weight (both in the planner);
the others rank by what :class:`RouteStats` saw: ``cost`` by the price of the request's estimated
tokens, ``latency`` by a moving average of time to first token, ``reliability`` by a moving average
of success, ``least-busy`` by attempts in flight. Ties keep the configured order, so equal
deployments behave as ``ordered``.

The averages decay with time, not with the number of observations (a half-life), so a deployment
that was slow or failing an hour ago is not judged by it: one not observed for
:data:`_FORGET_HALF_LIVES` half-lives counts as unknown again, and an unknown deployment is ranked
first so that it gets observed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway_common.errors import invalid_argument
from services.router.planner import Candidate
from services.router.pricing import cost_micro_usd

Strategy = Literal["ordered", "weighted", "cost", "latency", "reliability", "least-busy"]
STRATEGIES: tuple[Strategy, ...] = ("ordered", "weighted", "cost", "latency", "reliability", "least-busy")

_FORGET_HALF_LIVES = 5.0


@dataclass
class _Average:
    value: float
    at: float


@dataclass
class _Stats:
    first_token_s: _Average | None = None
    success: _Average | None = None
    in_flight: int = 0


class RouteStats:
    """Per-deployment time to first token, success rate and attempts in flight, in this router."""

    def __init__(self, half_life_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._half_life_s = half_life_s
        self._clock = clock
        self._stats: dict[str, _Stats] = {}

    def _get(self, candidate: Candidate) -> _Stats:
        return self._stats.setdefault(candidate.id, _Stats())

    def _blend(self, average: _Average | None, sample: float) -> _Average:
        now = self._clock()
        if average is None or self._forgotten(average, now):
            return _Average(sample, now)
        # The weight of the old value halves every half-life since it was last updated.
        keep = 0.5 ** (max(0.0, now - average.at) / self._half_life_s)
        return _Average(keep * average.value + (1 - keep) * sample, now)

    def _forgotten(self, average: _Average, now: float) -> bool:
        return now - average.at > _FORGET_HALF_LIVES * self._half_life_s

    def started(self, candidate: Candidate) -> None:
        """An attempt to ``candidate`` was sent."""
        self._get(candidate).in_flight += 1

    def ended(self, candidate: Candidate) -> None:
        """An attempt to ``candidate`` finished (answered, failed or was cancelled)."""
        stats = self._get(candidate)
        stats.in_flight = max(0, stats.in_flight - 1)

    def first_token(self, candidate: Candidate, seconds: float) -> None:
        """``candidate`` answered (unary) or sent its first chunk after ``seconds``."""
        stats = self._get(candidate)
        stats.first_token_s = self._blend(stats.first_token_s, seconds)

    def outcome(self, candidate: Candidate, success: bool) -> None:
        """``candidate`` answered, or failed with an error that says it is unhealthy."""
        stats = self._get(candidate)
        stats.success = self._blend(stats.success, 1.0 if success else 0.0)

    def latency(self, candidate: Candidate) -> float | None:
        """The moving average time to first token in seconds; None when unknown."""
        average = self._stats.get(candidate.id, _Stats()).first_token_s
        return None if average is None or self._forgotten(average, self._clock()) else average.value

    def success_rate(self, candidate: Candidate) -> float | None:
        """The moving average success rate in [0, 1]; None when unknown."""
        average = self._stats.get(candidate.id, _Stats()).success
        return None if average is None or self._forgotten(average, self._clock()) else average.value

    def in_flight(self, candidate: Candidate) -> int:
        """Attempts to ``candidate`` in flight in this router."""
        stats = self._stats.get(candidate.id)
        return stats.in_flight if stats else 0


def rank(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    stats: RouteStats,
    prompt_tokens: int,
    completion_tokens: int,
) -> tuple[Candidate, ...]:
    """``candidates`` in the order ``strategy`` prefers; ``ordered`` and ``weighted`` keep theirs.

    The sort is stable, so deployments ranked equal keep the order they came in.
    """
    if strategy == "cost":
        # An unpriced deployment "costs" $0 only because nothing knows its price: never the cheapest.
        return tuple(
            sorted(candidates, key=lambda c: (not c.price.priced, cost_micro_usd(c, prompt_tokens, completion_tokens)))
        )
    if strategy == "latency":
        # Unknown first (-inf): a deployment nobody has timed yet is worth one observation.
        return tuple(sorted(candidates, key=lambda c: _or(stats.latency(c), -math.inf)))
    if strategy == "reliability":
        return tuple(sorted(candidates, key=lambda c: -_or(stats.success_rate(c), 1.0)))
    if strategy == "least-busy":
        return tuple(sorted(candidates, key=stats.in_flight))
    return tuple(candidates)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


ALLOW_PROVIDERS_PARAM = "gateway.constraints.routing.allow_providers"


def allow_only(candidates: Sequence[Candidate], providers: Sequence[str], model: str) -> tuple[Candidate, ...]:
    """The ``candidates`` (already what the key and tenant allow) whose provider is in ``providers``.

    A request can only narrow: an empty list keeps every candidate, and a list that leaves none is
    INVALID_ARGUMENT naming the parameter, never a way around the key's allowlist.
    """
    if not providers:
        return tuple(candidates)
    wanted = set(providers)
    kept = tuple(c for c in candidates if c.routed_provider in wanted)
    if not kept:
        raise invalid_argument(
            f"None of the providers in allow_providers ({', '.join(providers)}) can serve the model "
            f"`{model}` for this API key.",
            ALLOW_PROVIDERS_PARAM,
        )
    return kept


def route(candidate: Candidate, strategy: str) -> str:
    """The ``x-gateway-route`` value: which deployment answered, and the strategy that chose it."""
    return f"{candidate.id}; strategy={strategy}"
