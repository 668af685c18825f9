"""Which attempt comes after a failure, how long to wait for it, and which error the client gets.

The candidates arrive ordered (planner, strategy, health); this module only walks them:

- a transient failure (5xx, a reset connection, a broken stream, a short Retry-After) is retried
  on the same deployment up to ``retries_per_deployment`` times, then the next deployment is tried;
- a timeout, a 429 without a usable Retry-After or a Retry-After longer than ``max_retry_wait_s``
  moves on at once: the next deployment is not made to wait out the first one's Retry-After;
- a field one deployment cannot honour, a prompt over its context window, or (when configured) a
  content-filter refusal moves on to another deployment; any other refusal ends the request;
- the last deployment is retried until ``max_attempts`` (at least one attempt per candidate),
  unless its Retry-After is longer than ``max_retry_wait_s``: then the client gets it.

When every attempt failed the client gets the most telling cause: a fallback refusing what the
primary accepted (its 400) says less than the primary's own failure (its 503).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from gateway_common.errors import GatewayError, Reason
from services.router.planner import Candidate

# Refusals that are about this deployment, not the request: another deployment may take it.
_MOVE_ON_REASONS = frozenset({Reason.UNSUPPORTED_FIELD, Reason.CONTEXT_LENGTH_EXCEEDED})
# Refusals that say something about the request itself, worth more than an earlier outage.
_REQUEST_REASONS = frozenset({Reason.CONTEXT_LENGTH_EXCEEDED, Reason.CONTENT_FILTERED})


@dataclass(frozen=True)
class AttemptPolicy:
    """The router's retry settings, as the attempt walker reads them."""

    max_attempts: int
    retries_per_deployment: int
    retry_backoff_s: float
    max_retry_wait_s: float
    retry_content_filter: bool = False


@dataclass(frozen=True)
class NextAttempt:
    """The attempt to make after a failure, and how long to wait before it."""

    candidate: Candidate
    wait_s: float


@dataclass
class Attempts:
    """The attempts of one request over its ordered candidates."""

    candidates: Sequence[Candidate]
    policy: AttemptPolicy
    prompt_tokens: int = 0
    context_windows: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Context windows by (provider, upstream model), where the config gives one."""
    count: int = 0
    """Attempts started so far."""
    log: list[str] = field(default_factory=list)
    """One line per failed (or continued) attempt: ``<deployment>: <cause>``."""
    errors: list[tuple[Candidate, GatewayError]] = field(default_factory=list)
    _position: int = 0
    _tries_here: int = 0

    def __post_init__(self) -> None:
        # A deployment whose context window is known not to fit the prompt is skipped up front;
        # if none fits the request is sent to the first one anyway and its refusal reaches the client.
        fitting = [c for c in self.candidates if self._fits(c)]
        if fitting:
            self.candidates = fitting

    @property
    def budget(self) -> int:
        """The most attempts this request may make."""
        return max(self.policy.max_attempts, len(self.candidates))

    def current(self) -> Candidate:
        """The deployment the next (or running) attempt goes to."""
        return self.candidates[self._position]

    def start(self) -> Candidate:
        """Count an attempt on the current deployment and return it."""
        self.count += 1
        self._tries_here += 1
        return self.current()

    def note(self, candidate: Candidate, what: str) -> None:
        """Add a line to the attempt log."""
        self.log.append(f"{candidate.id}: {what}")

    def failed(self, error: GatewayError) -> NextAttempt | None:
        """Record the current attempt's failure; the next attempt, or None to give up."""
        failed = self.current()
        self.errors.append((failed, error))
        self.note(failed, _cause(error))
        if self.count >= self.budget:
            return None
        later = self._later_candidates(failed, error)
        if error.retryable:
            wait = self._same_deployment_wait(error)
            # Attempts beyond one for each later deployment may be spent here.
            spare = self.budget - self.count - len(later)
            if wait is not None and spare > 0 and (self._tries_here <= self.policy.retries_per_deployment or not later):
                return NextAttempt(failed, wait)
            if later:
                return self._move_to(later[0])
            if error.retry_after_s is None:
                # The only deployment left, silent or rate limited without saying for how long:
                # retried with backoff until the budget is spent.
                return NextAttempt(failed, self.backoff_s())
            return None  # a Retry-After too long to wait out goes back to the client
        if later and (
            error.reason in _MOVE_ON_REASONS
            or (error.reason == Reason.CONTENT_FILTERED and self.policy.retry_content_filter)
        ):
            return self._move_to(later[0])
        return None

    def final_error(self) -> GatewayError:
        """The error the client gets once every attempt failed: the most telling, attempts listed."""
        if not self.errors:
            raise AssertionError("final_error before any attempt failed")
        chosen = self.errors[-1][1]
        last_candidate = self.errors[-1][0]
        if not chosen.retryable and chosen.reason not in _REQUEST_REASONS:
            # A fallback refusing the request (an unsupported parameter, say) after an earlier
            # deployment failed to serve it: the earlier failure is why the request did not work.
            earlier = [e for c, e in self.errors if c != last_candidate and e.retryable]
            if earlier:
                chosen = earlier[0]
        if chosen.reason == Reason.CONTEXT_LENGTH_EXCEEDED:
            chosen = _context_error(chosen, self.prompt_tokens)
        if self.log:
            chosen.metadata = {**chosen.metadata, "attempts": "; ".join(self.log)}
        return chosen

    def backoff_s(self) -> float:
        """The jittered exponential backoff before retrying the same deployment."""
        return float(self.policy.retry_backoff_s * (2 ** max(0, self._tries_here - 1)) * random.uniform(0.5, 1.0))

    def _fits(self, candidate: Candidate) -> bool:
        window = self.context_windows.get((candidate.provider, candidate.model))
        return window is None or self.prompt_tokens < window

    def _later_candidates(self, failed: Candidate, error: GatewayError) -> list[Candidate]:
        later = [c for c in self.candidates[self._position + 1 :] if c != failed]
        if error.reason == Reason.CONTEXT_LENGTH_EXCEEDED:
            # The upstream said the prompt is too long: only a larger window can take it.
            window = self.context_windows.get((failed.provider, failed.model))
            later = [
                c
                for c in later
                if window is None or (w := self.context_windows.get((c.provider, c.model))) is None or w > window
            ]
        return later

    def _same_deployment_wait(self, error: GatewayError) -> float | None:
        """How long to wait before retrying the same deployment, or None when it is not worth it."""
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return None  # a black hole: another attempt here costs another whole timeout
        if error.retry_after_s is not None:
            if error.retry_after_s > self.policy.max_retry_wait_s:
                return None
            return max(self.backoff_s(), error.retry_after_s)
        if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return None  # rate limited without saying for how long: try elsewhere
        return self.backoff_s()

    def _move_to(self, candidate: Candidate) -> NextAttempt:
        self._position = list(self.candidates).index(candidate, self._position + 1)
        self._tries_here = 0
        # A different deployment does not wait out the failed one's Retry-After.
        return NextAttempt(candidate, 0.0)


def _cause(error: GatewayError) -> str:
    status = error.metadata.get("upstream_status")
    cause = f"{error.code.name} {error.reason}"
    return f"{cause} (HTTP {status})" if status else cause


def _context_error(error: GatewayError, prompt_tokens: int) -> GatewayError:
    """The client's 400 when no deployment's context window takes the prompt: it names ``messages``."""
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.CONTEXT_LENGTH_EXCEEDED,
        f"The messages (about {prompt_tokens} tokens at most) exceed the context window of every "
        f"deployment of this model: {error.message}",
        {**error.metadata, "param": "messages", "retryable": "false"},
    )
