"""The job state machine: what a job is, and which transitions a store may make.

    queued ──claim──▶ running ──succeed──▶ succeeded
      ▲                 │ ├───fail──────▶ failed
      └──retry/release──┘ └───cancel────▶ cancelled   (queued ──cancel──▶ cancelled too)

``release`` is a graceful stop's: the run is handed back without counting against the job.

Every transition out of ``running`` is compare-and-set on (job id, lease token): a claim mints a
new token, so a worker whose lease ran out (its router was killed, or paused past the lease) and
whose job another worker claimed can never complete, fail or re-queue it. That is what makes
success happen once. A running job whose lease expired is claimable again, as if queued; one that
has used all its attempts is failed instead. No protobuf and no I/O here.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from enum import StrEnum


class Status(StrEnum):
    """A job's status, named as the edge renders it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})


@dataclass(frozen=True)
class JobFailure:
    """Why a job failed: the gRPC code, ErrorInfo reason, message and parameter of the error."""

    grpc_code: int
    reason: str
    message: str
    param: str = ""


LOST = "DEPENDENCY_UNAVAILABLE"
"""The reason (an ErrorInfo reason of ``gateway_common.errors.Reason``) of a job whose every run
was lost with its worker (the lease ran out each time)."""


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return f"job_{secrets.token_hex(12)}"


def new_token() -> str:
    """A fresh lease token."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Job:
    """One job as stored. ``request`` and ``result`` are serialized canonical protobuf messages."""

    id: str
    tenant_id: str
    key_id: str
    format: int
    request: bytes
    created_at: float
    max_attempts: int
    webhook_url: str = ""
    status: Status = Status.QUEUED
    attempts: int = 0
    not_before: float = 0.0
    """A queued job is not claimed before this time (retry backoff)."""
    lease_token: str = ""
    lease_until: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error: JobFailure | None = None
    result: bytes | None = field(default=None, repr=False)

    @property
    def final(self) -> bool:
        """Whether the job has ended."""
        return self.status in FINAL

    def claimable(self, now: float) -> bool:
        """Whether a worker may claim the job now: queued and due, or running on a dead lease."""
        if self.status == Status.QUEUED:
            return self.not_before <= now
        return self.status == Status.RUNNING and self.lease_until <= now

    def claim(self, now: float, lease_s: float, token: str) -> Job:
        """The job claimed under ``token``; a job lost too often is failed instead."""
        if not self.claimable(now):
            raise ValueError(f"job {self.id} is not claimable")
        if self.attempts >= self.max_attempts:
            failure = JobFailure(14, LOST, f"The job's {self.attempts} runs were all lost with their workers.")
            return self._end(Status.FAILED, now, error=failure)
        return replace(
            self,
            status=Status.RUNNING,
            attempts=self.attempts + 1,
            lease_token=token,
            lease_until=now + lease_s,
            started_at=now,
        )

    def holds(self, token: str) -> bool:
        """Whether ``token`` is the live lease of a running job (the compare of every compare-and-set)."""
        return self.status == Status.RUNNING and bool(token) and self.lease_token == token

    def heartbeat(self, token: str, now: float, lease_s: float) -> Job | None:
        """The job with its lease extended, or None when ``token`` no longer holds it."""
        return replace(self, lease_until=now + lease_s) if self.holds(token) else None

    def succeed(self, token: str, now: float, result: bytes) -> Job | None:
        """The job succeeded with ``result``, or None when ``token`` no longer holds it."""
        return self._end(Status.SUCCEEDED, now, result=result) if self.holds(token) else None

    def fail(self, token: str, now: float, error: JobFailure) -> Job | None:
        """The job failed with ``error``, or None when ``token`` no longer holds it."""
        return self._end(Status.FAILED, now, error=error) if self.holds(token) else None

    def retry(self, token: str, not_before: float, error: JobFailure | None) -> Job | None:
        """The job queued again until ``not_before``, or None when ``token`` no longer holds it.

        Out of attempts, the retry is a failure with ``error``."""
        if not self.holds(token):
            return None
        if self.attempts >= self.max_attempts:
            failure = error or JobFailure(14, LOST, "The job ran out of attempts.")
            return self._end(Status.FAILED, not_before, error=failure)
        return replace(self, status=Status.QUEUED, lease_token="", lease_until=0.0, not_before=not_before, error=error)

    def release(self, token: str, now: float) -> Job | None:
        """The job queued again at once, its run not counted (its router is stopping, not failing it),
        or None when ``token`` no longer holds it."""
        if not self.holds(token):
            return None
        return replace(
            self, status=Status.QUEUED, attempts=self.attempts - 1, lease_token="", lease_until=0.0, not_before=now
        )

    def cancel(self, now: float) -> Job | None:
        """The job cancelled (queued or running), or None when it has already ended."""
        if self.final:
            return None
        return self._end(Status.CANCELLED, now)

    def _end(self, status: Status, now: float, *, result: bytes | None = None, error: JobFailure | None = None) -> Job:
        return replace(
            self, status=status, finished_at=now, lease_token="", lease_until=0.0, result=result, error=error
        )
