"""What a job store does, whichever engine keeps it: one Protocol, and the JSON a job is stored as.

Every change is ``update(job_id, transition)``: the store reads the job, applies one of
:class:`~services.router.jobs.model.Job`'s transitions and writes the outcome only if the job did
not change in between (a transaction in SQLite, WATCH/MULTI in Redis). The state machine's
compare-and-set on the lease token is therefore atomic in both engines.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

from services.router.jobs.model import Job, JobFailure, Status

Transition = Callable[[Job], Job | None]
"""A state-machine step: the job as it should become, or None to leave it as it is."""


class JobStore(Protocol):
    """A durable queue of jobs."""

    async def open(self) -> None:
        """Prepare the store (schema, connection); called once before use."""

    async def close(self) -> None:
        """Release the store's resources."""

    async def create(self, job: Job) -> None:
        """Store a new job (queued)."""

    async def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown."""

    async def list(self, tenant_id: str, limit: int, after: str) -> tuple[list[Job], bool]:
        """Up to ``limit`` of the tenant's jobs, newest first, after the job ``after``; and whether more follow."""

    async def update(self, job_id: str, transition: Transition) -> Job | None:
        """Apply ``transition`` atomically; the new job, or None when unknown or refused."""

    async def claim(self, now: float, lease_s: float, token: str) -> Job | None:
        """Claim one due job (queued and due, or running on an expired lease) under ``token``."""

    async def purge(self, before: float) -> int:
        """Delete jobs that ended before ``before``; how many."""


def due_time(job: Job) -> float | None:
    """When the job becomes claimable (None once it has ended): the queue's sort key."""
    if job.status == Status.QUEUED:
        return job.not_before
    if job.status == Status.RUNNING:
        return job.lease_until
    return None


def to_json(job: Job) -> str:
    """The job as stored."""
    data: dict[str, Any] = asdict(job)
    data["request"] = base64.b64encode(job.request).decode()
    data["result"] = base64.b64encode(job.result).decode() if job.result is not None else None
    return json.dumps(data, separators=(",", ":"))


def from_json(text: str | bytes) -> Job:
    """The job stored as ``text``."""
    data = json.loads(text)
    data["request"] = base64.b64decode(data["request"])
    data["result"] = base64.b64decode(data["result"]) if data["result"] is not None else None
    data["status"] = Status(data["status"])
    data["error"] = JobFailure(**data["error"]) if data["error"] else None
    return Job(**data)
