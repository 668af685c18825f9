"""Worker tasks: claim a due job, run it under a heartbeat, record how it ended — once.

Each claim mints a lease token; the heartbeat extends the lease every third of it and, when the
store refuses (the job was cancelled, or the lease was lost to another worker), cancels the run.
The run's end is written with the token, so only the worker holding the live lease can write it.
Retryable failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED with a Retry-After, or an
error marked retryable) are queued again with exponential backoff until ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from gateway_common.config import JobsConfig
from gateway_common.errors import GatewayError
from services.router.jobs.model import Job, JobFailure, Status, new_token
from services.router.jobs.store import JobStore

log = logging.getLogger(__name__)

Run = Callable[[Job], Coroutine[Any, Any, bytes]]
"""Runs a job's request; its serialized canonical answer, or raises GatewayError."""

Notify = Callable[[Job], None]
"""Told of every job that ended here (the completion webhook); must not block."""

_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def retryable(error: GatewayError) -> bool:
    """Whether a later run may succeed where this one failed."""
    if error.retryable or error.code in _RETRYABLE:
        return True
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after_s is not None


def failure_of(error: GatewayError) -> JobFailure:
    """The stored form of ``error``."""
    return JobFailure(error.code.value[0], str(error.reason), error.message, error.metadata.get("param", ""))


class Workers:
    """The job workers of one router process."""

    def __init__(
        self,
        store: JobStore,
        run: Run,
        settings: JobsConfig,
        notify: Notify | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._run = run
        self._settings = settings
        self._notify = notify
        self._clock = clock
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._running: dict[str, asyncio.Task[bytes]] = {}

    def set_notify(self, notify: Notify) -> None:
        """Who is told of jobs that end here (set once, before start)."""
        self._notify = notify

    def start(self) -> None:
        """Start the worker tasks."""
        for index in range(self._settings.workers):
            self._loops.append(asyncio.create_task(self._loop(), name=f"job-worker-{index}"))

    async def stop(self) -> None:
        """Stop the workers; a job running here is cancelled and queued again for the next worker
        (the cancelled run is metered, but does not count against the job's attempts)."""
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        self._loops.clear()

    def wake(self) -> None:
        """A job was queued here: look now rather than at the next poll."""
        self._wake.set()

    def cancel_local(self, job_id: str) -> None:
        """Cancel the run of ``job_id`` if it runs in this process (the orchestrator meters it CANCELLED)."""
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()

    async def _loop(self) -> None:
        while True:
            try:
                job = await self._store.claim(self._clock(), self._settings.lease_s, new_token())
            except Exception:
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_s)
                continue
            if job.status != Status.RUNNING:
                # Out of attempts: the claim failed it.
                self._ended(job)
                continue
            try:
                await self.run_claimed(job)
            except Exception:
                # The store failed to record the end: the lease runs out and the job is claimed again.
                log.exception("job %s: recording its end failed", job.id)

    async def run_claimed(self, job: Job) -> Job | None:
        """Run a job this worker claimed; the job as it ended (None when it is no longer ours)."""
        token = job.lease_token
        task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._running[job.id] = task
        heartbeat = asyncio.create_task(self._heartbeat(job, task))
        try:
            # wait(), not await: a cancelled run comes back here, only our own cancellation raises.
            await asyncio.wait({task})
        except asyncio.CancelledError:
            # This router is stopping: the run is cancelled and the job goes back to the queue.
            task.cancel()
            await asyncio.wait({task})
            await self._store.update(job.id, lambda j: j.release(token, self._clock()))
            raise
        finally:
            heartbeat.cancel()
            self._running.pop(job.id, None)
        ended = await self._store.update(job.id, lambda j: self._outcome(j, token, task))
        if ended is None:
            # Cancelled meanwhile, or our lease went to another worker: what it says stands.
            return None
        if ended.final:
            self._ended(ended)
        else:
            self.wake()
        return ended

    def _outcome(self, job: Job, token: str, task: asyncio.Task[bytes]) -> Job | None:
        now = self._clock()
        if task.cancelled():
            # Cancelled by its tenant (the store says so already) or its lease was lost: not ours to write.
            return None
        error = task.exception()
        if error is None:
            return job.succeed(token, now, task.result())
        if not isinstance(error, GatewayError):
            log.error("job %s: run raised", job.id, exc_info=error)
            return job.fail(token, now, JobFailure(13, "INTERNAL", "The job failed with an internal error."))
        failure = failure_of(error)
        if not retryable(error):
            return job.fail(token, now, failure)
        backoff = self._settings.retry_backoff_s * 2 ** max(0, job.attempts - 1)
        return job.retry(token, now + max(backoff, error.retry_after_s or 0.0), failure)

    async def _heartbeat(self, job: Job, task: asyncio.Task[bytes]) -> None:
        interval = self._settings.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self._store.update(
                    job.id, lambda j: j.heartbeat(job.lease_token, self._clock(), self._settings.lease_s)
                )
            except Exception:
                # The store is away: keep running; the lease may still outlive the outage.
                log.warning("job %s: heartbeat failed", job.id, exc_info=True)
                continue
            if held is None:
                task.cancel()
                return

    def _ended(self, job: Job) -> None:
        log.info("job %s %s after %d attempt(s)", job.id, job.status, job.attempts, extra={"request_id": job.id})
        if self._notify is not None:
            self._notify(job)
