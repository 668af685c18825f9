"""Both job stores behave alike: create, list newest first by tenant, claim under a lease, compare-and-set."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.router.jobs.model import Job, Status
from services.router.jobs.store import JobStore
from services.router.jobs.store_redis import RedisJobStore
from services.router.jobs.store_sqlite import SqliteJobStore


def _job(ident: str, tenant: str = "t1", created: float = 1.0) -> Job:
    return Job(id=ident, tenant_id=tenant, key_id="k", format=1, request=b"\x01", created_at=created, max_attempts=3)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "sqlite":
        sqlite = SqliteJobStore(tmp_path / "jobs.db")
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    redis_store = RedisJobStore(redis, prefix=f"test-jobs-{uuid.uuid4().hex}")
    await redis_store.open()
    yield redis_store
    await redis.aclose()


async def test_list_is_per_tenant_newest_first_and_paginates(store: JobStore) -> None:
    for i in range(5):
        await store.create(_job(f"job_{i}", created=float(i)))
    await store.create(_job("job_other", tenant="t2", created=10.0))
    page, more = await store.list("t1", 2, "")
    assert [j.id for j in page] == ["job_4", "job_3"] and more
    page, more = await store.list("t1", 2, "job_3")
    assert [j.id for j in page] == ["job_2", "job_1"] and more
    page, more = await store.list("t1", 2, "job_1")
    assert [j.id for j in page] == ["job_0"] and not more
    assert (await store.list("t1", 2, "job_other")) == ([], False)
    assert [j.id for j in (await store.list("t2", 10, ""))[0]] == ["job_other"]


async def test_claim_is_exclusive_until_the_lease_runs_out(store: JobStore) -> None:
    await store.create(_job("job_a"))
    claims = await asyncio.gather(*(store.claim(100.0, 30.0, f"w{i}") for i in range(4)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].status == Status.RUNNING
    token = won[0].lease_token
    assert await store.claim(120.0, 30.0, "late") is None
    again = await store.claim(131.0, 30.0, "next")
    assert again is not None and again.attempts == 2 and again.lease_token == "next"
    # The first worker comes back: its success is refused, the live one's is recorded.
    assert await store.update("job_a", lambda j: j.succeed(token, 132.0, b"stale")) is None
    done = await store.update("job_a", lambda j: j.succeed("next", 133.0, b"ok"))
    assert done is not None and done.status == Status.SUCCEEDED
    stored = await store.get("job_a")
    assert stored is not None and stored.result == b"ok" and stored.request == b"\x01"
    assert await store.claim(1e9, 30.0, "x") is None


async def test_concurrent_completions_record_one(store: JobStore) -> None:
    await store.create(_job("job_b"))
    claimed = await store.claim(0.0, 30.0, "w")
    assert claimed is not None
    results = await asyncio.gather(
        *(store.update("job_b", lambda j, n=n: j.succeed("w", 1.0, f"r{n}".encode())) for n in range(5))
    )
    assert sum(r is not None for r in results) == 1
    assert await store.get("job_unknown") is None
    assert await store.update("job_unknown", lambda j: j.cancel(1.0)) is None
