"""Workers: retry retryable failures with backoff, fail the rest, cancel on request, record success once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway_common.config import JobsConfig
from gateway_common.errors import GatewayError, Reason
from services.router.jobs.model import Job, Status
from services.router.jobs.store_sqlite import SqliteJobStore
from services.router.jobs.worker import Workers


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    sqlite = SqliteJobStore(tmp_path / "jobs.db")
    await sqlite.open()
    yield sqlite
    await sqlite.close()


def _job(ident: str) -> Job:
    return Job(id=ident, tenant_id="t", key_id="k", format=1, request=b"", created_at=0.0, max_attempts=3)


SETTINGS = JobsConfig(workers=1, lease_s=3.0, retry_backoff_s=0.05, poll_s=0.05)


async def _until_final(store: SqliteJobStore, job_id: str) -> Job:
    async with asyncio.timeout(10):
        while True:
            job = await store.get(job_id)
            if job is not None and job.final:
                return job
            await asyncio.sleep(0.02)


async def test_retryable_failures_are_retried_then_the_answer_is_recorded(store: SqliteJobStore) -> None:
    runs: list[int] = []
    ended: list[Job] = []

    async def run(job: Job) -> bytes:
        runs.append(job.attempts)
        if len(runs) < 3:
            raise GatewayError(grpc.StatusCode.UNAVAILABLE, Reason.ALL_CANDIDATES_FAILED, "down", {"retryable": "true"})
        return b"answer"

    workers = Workers(store, run, SETTINGS, notify=ended.append)
    await store.create(_job("job_r"))
    workers.start()
    try:
        job = await _until_final(store, "job_r")
    finally:
        await workers.stop()
    assert job.status == Status.SUCCEEDED and job.result == b"answer" and job.attempts == 3
    assert runs == [1, 2, 3] and [j.id for j in ended] == ["job_r"]


async def test_a_permanent_error_fails_at_once_and_retryable_ones_give_up(store: SqliteJobStore) -> None:
    async def run(job: Job) -> bytes:
        if job.id == "job_denied":
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED, Reason.PERMISSION_DENIED, "revoked", {"param": "key_id"}
            )
        raise GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.RATE_LIMITED, "slow down", retry_after_s=0.05)

    workers = Workers(store, run, SETTINGS)
    await store.create(_job("job_denied"))
    await store.create(_job("job_limited"))
    workers.start()
    try:
        denied = await _until_final(store, "job_denied")
        limited = await _until_final(store, "job_limited")
    finally:
        await workers.stop()
    assert denied.status == Status.FAILED and denied.attempts == 1
    assert denied.error is not None and denied.error.grpc_code == 7 and denied.error.param == "key_id"
    assert limited.status == Status.FAILED and limited.attempts == 3
    assert limited.error is not None and limited.error.reason == "RATE_LIMITED"


async def test_cancel_of_a_running_job_cancels_its_run_and_nothing_overwrites_it(store: SqliteJobStore) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def run(job: Job) -> bytes:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b"never"

    workers = Workers(store, run, SETTINGS)
    await store.create(_job("job_c"))
    workers.start()
    try:
        async with asyncio.timeout(10):
            await started.wait()
        assert await store.update("job_c", lambda j: j.cancel(1.0)) is not None
        workers.cancel_local("job_c")
        async with asyncio.timeout(10):
            await cancelled.wait()
    finally:
        await workers.stop()
    job = await store.get("job_c")
    assert job is not None and job.status == Status.CANCELLED and job.result is None


async def test_stopping_a_router_queues_its_running_job_again(store: SqliteJobStore) -> None:
    started = asyncio.Event()

    async def run(job: Job) -> bytes:
        started.set()
        await asyncio.sleep(30)
        return b"never"

    workers = Workers(store, run, SETTINGS)
    await store.create(_job("job_s"))
    workers.start()
    async with asyncio.timeout(10):
        await started.wait()
    await workers.stop()
    job = await store.get("job_s")
    assert job is not None and job.status == Status.QUEUED and job.attempts == 0 and job.lease_token == ""
