"""The job state machine: every transition out of running is compare-and-set on the lease token."""

from __future__ import annotations

import pytest

from services.router.jobs.model import LOST, Job, JobFailure, Status

FAILURE = JobFailure(14, "UPSTREAM_UNAVAILABLE", "down")


def _job(max_attempts: int = 3) -> Job:
    return Job(
        id="job_1", tenant_id="t", key_id="k", format=1, request=b"", created_at=100.0, max_attempts=max_attempts
    )


def test_claim_succeed_once_and_a_stale_worker_can_do_nothing() -> None:
    first = _job().claim(100.0, 30.0, "a")
    assert first.status == Status.RUNNING and first.attempts == 1 and first.lease_until == 130.0
    assert not first.claimable(129.9)
    # The first worker's router dies: once the lease is out, another worker claims it.
    second = first.claim(131.0, 30.0, "b")
    assert second.attempts == 2 and second.lease_token == "b"
    assert second.succeed("a", 132.0, b"stale") is None
    assert second.heartbeat("a", 132.0, 30.0) is None
    assert second.fail("a", 132.0, FAILURE) is None
    assert second.retry("a", 132.0, FAILURE) is None
    done = second.succeed("b", 133.0, b"answer")
    assert done is not None and done.status == Status.SUCCEEDED and done.result == b"answer"
    assert done.finished_at == 133.0 and done.lease_token == ""
    # Success is recorded once: nothing can complete it again.
    assert done.succeed("b", 134.0, b"again") is None
    assert done.cancel(134.0) is None
    assert not done.claimable(1e12)


def test_retry_waits_for_its_backoff_then_fails_when_attempts_are_spent() -> None:
    job = _job(max_attempts=2).claim(0.0, 30.0, "a")
    queued = job.retry("a", 10.0, FAILURE)
    assert queued is not None and queued.status == Status.QUEUED and queued.error == FAILURE
    assert not queued.claimable(9.9) and queued.claimable(10.0)
    again = queued.claim(10.0, 30.0, "b")
    failed = again.retry("b", 20.0, FAILURE)
    assert failed is not None and failed.status == Status.FAILED and failed.error == FAILURE and failed.attempts == 2


def test_a_job_lost_with_every_worker_fails_instead_of_running_again() -> None:
    job = _job(max_attempts=1).claim(0.0, 30.0, "a")
    lost = job.claim(31.0, 30.0, "b")
    assert lost.status == Status.FAILED and lost.error is not None and lost.error.reason == LOST


def test_cancel_of_queued_or_running_job_ends_it_and_locks_out_the_worker() -> None:
    queued = _job().cancel(1.0)
    assert queued is not None and queued.status == Status.CANCELLED
    running = _job().claim(0.0, 30.0, "a")
    cancelled = running.cancel(1.0)
    assert cancelled is not None and cancelled.status == Status.CANCELLED
    assert cancelled.succeed("a", 2.0, b"late") is None
    with pytest.raises(ValueError):
        cancelled.claim(1e9, 30.0, "c")


def test_release_hands_the_job_back_without_counting_the_run() -> None:
    job = _job(max_attempts=1).claim(0.0, 30.0, "a")
    assert job.release("b", 1.0) is None
    released = job.release("a", 1.0)
    assert released is not None and released.status == Status.QUEUED and released.attempts == 0
    assert released.claim(1.0, 30.0, "c").status == Status.RUNNING
