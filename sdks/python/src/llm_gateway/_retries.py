"""When a failed call is tried again, and after how long.

Only failures another attempt can fix are retried: rate limits (after their ``Retry-After``),
connection failures and timeouts, and the gateway's own 502/503 (UNAVAILABLE). A spent budget is
not (it resets only at its window's start). Calls that are not idempotent (a chat completion, a
job submission) are retried only when the caller opts in, per call or per client: a retry after a
lost answer may run — and bill — the request twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llm_gateway.errors import APIConnectionError, APIError, BudgetExceededError, RateLimitError


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry."""

    max_retries: int = 2
    """Retries after the first attempt."""
    backoff_s: float = 0.5
    """The first backoff without a Retry-After; it doubles with each retry (with jitter)."""
    max_backoff_s: float = 8.0
    """The longest backoff without a Retry-After."""
    max_retry_after_s: float = 60.0
    """A Retry-After longer than this is not waited for: the error is raised instead."""

    def delay(self, retries_done: int, error: APIError) -> float | None:
        """Seconds to wait before the next attempt after ``error``; None when it is not retried."""
        if retries_done >= self.max_retries or not retryable(error):
            return None
        wait: float | None = error.retry_after
        if wait is not None:
            return None if wait > self.max_retry_after_s else wait
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0**retries_done)
        return ceiling * random.uniform(0.5, 1.0)


def retryable(error: APIError) -> bool:
    """Whether another attempt may succeed."""
    if isinstance(error, BudgetExceededError):
        return False
    if isinstance(error, RateLimitError | APIConnectionError):
        return True
    return type(error) is APIError and (error.status_code in (502, 503) or error.grpc_code == "UNAVAILABLE")
