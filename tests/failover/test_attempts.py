"""The attempt walker alone: which attempt follows which failure, and how long it waits."""

from __future__ import annotations

import grpc

from gateway_common.errors import GatewayError, Reason
from services.router.attempts import AttemptPolicy, Attempts
from services.router.planner import Candidate

A, B = Candidate("a", "1"), Candidate("b", "2")
POLICY = AttemptPolicy(max_attempts=3, retries_per_deployment=1, retry_backoff_s=0.0, max_retry_wait_s=2.0)


def _error(
    code: grpc.StatusCode, reason: Reason = Reason.UPSTREAM_ERROR, retryable: bool = True, **fields: float
) -> GatewayError:
    return GatewayError(code, reason, "x", {"retryable": str(retryable).lower()}, retry_after_s=fields.get("after"))


def test_a_short_retry_after_is_waited_out_on_the_same_deployment() -> None:
    attempts = Attempts((A, B), POLICY)
    attempts.start()
    step = attempts.failed(_error(grpc.StatusCode.RESOURCE_EXHAUSTED, after=1.5))
    assert step is not None and (step.candidate, step.wait_s) == (A, 1.5)


def test_a_long_retry_after_moves_on_at_once_or_gives_up_alone() -> None:
    attempts = Attempts((A, B), POLICY)
    attempts.start()
    step = attempts.failed(_error(grpc.StatusCode.RESOURCE_EXHAUSTED, after=30))
    assert step is not None and (step.candidate, step.wait_s) == (B, 0.0)
    alone = Attempts((A,), POLICY)
    alone.start()
    assert alone.failed(_error(grpc.StatusCode.RESOURCE_EXHAUSTED, after=30)) is None  # the client gets its 429


def test_content_filter_moves_on_only_when_configured() -> None:
    refusal = _error(grpc.StatusCode.INVALID_ARGUMENT, Reason.CONTENT_FILTERED, retryable=False)
    attempts = Attempts((A, B), POLICY)
    attempts.start()
    assert attempts.failed(refusal) is None
    configured = Attempts((A, B), AttemptPolicy(3, 1, 0.0, 2.0, retry_content_filter=True))
    configured.start()
    step = configured.failed(refusal)
    assert step is not None and step.candidate == B


def test_a_context_window_known_too_small_is_skipped_up_front() -> None:
    attempts = Attempts((A, B), POLICY, prompt_tokens=5000, context_windows={("a", "1"): 4096})
    assert attempts.start() == B


def test_retries_never_starve_the_later_deployments() -> None:
    attempts = Attempts((A, B), AttemptPolicy(2, 5, 0.0, 2.0))
    attempts.start()
    step = attempts.failed(_error(grpc.StatusCode.UNAVAILABLE))
    assert step is not None and step.candidate == B  # 2 attempts for 2 deployments: no retry in place
