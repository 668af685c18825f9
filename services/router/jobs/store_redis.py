"""The job queue on Redis (``REDIS_URL``), shared by every router replica.

A job is one JSON string (``<prefix>:job:<id>``); ``<prefix>:due`` is a sorted set of the jobs
that can be claimed, scored by when (a queued job's ``not_before``, a running job's lease expiry),
so a job whose router died is claimable again once its lease runs out, by any replica; and
``<prefix>:tenant:<id>`` orders a tenant's jobs by creation for listing. Every change is
WATCH/MULTI/EXEC on the job's key (Redis's optimistic transaction): the state machine's
compare-and-set on the lease token commits only if nobody changed the job in between.

Why not arq, saq or taskiq: they run functions, while the job's lifecycle here (lease token
compare-and-set, cancel of a running job, per-tenant listing, results kept for polling) is the
state machine itself; each would have needed it on top, beside its own. Redis Streams with
XAUTOCLAIM gives leases but no delayed retries or status, which would again need these keys.
Finished jobs expire after ``retention_s``.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import WatchError

from services.router.jobs.model import Job
from services.router.jobs.store import Transition, due_time, from_json, to_json


class RedisJobStore:
    """Jobs on Redis."""

    def __init__(self, redis: Redis, prefix: str = "gateway:jobs", retention_s: float = 7 * 86400.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._retention_s = retention_s

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def _tenant_key(self, tenant_id: str) -> str:
        return f"{self._prefix}:tenant:{tenant_id}"

    @property
    def _due_key(self) -> str:
        return f"{self._prefix}:due"

    async def open(self) -> None:
        """Check that Redis answers."""
        await self._redis.ping()

    async def close(self) -> None:
        """Nothing to release: the connection belongs to the caller."""

    async def create(self, job: Job) -> None:
        """Store a new job."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._job_key(job.id), to_json(job), nx=True)
            pipe.zadd(self._tenant_key(job.tenant_id), {job.id: job.created_at})
            due = due_time(job)
            if due is not None:
                pipe.zadd(self._due_key, {job.id: due})
            await pipe.execute()

    async def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        raw = await self._redis.get(self._job_key(job_id))
        return from_json(raw) if raw is not None else None

    async def list(self, tenant_id: str, limit: int, after: str) -> tuple[list[Job], bool]:
        """The tenant's jobs, newest first, after ``after``."""
        key = self._tenant_key(tenant_id)
        start = 0
        if after:
            rank = await self._redis.zrevrank(key, after)
            if rank is None:
                return [], False
            start = int(rank) + 1  # type: ignore[arg-type]
        ids = [
            i.decode() if isinstance(i, bytes) else str(i)
            for i in await self._redis.zrevrange(key, start, start + limit)
        ]
        raws = await self._redis.mget([self._job_key(i) for i in ids]) if ids else []
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:
            # Expired with their retention: forget them here too.
            await self._redis.zrem(key, *gone)
        jobs = [from_json(raw) for raw in raws if raw is not None]
        return jobs[:limit], len(jobs) > limit

    async def update(self, job_id: str, transition: Transition) -> Job | None:
        """Apply ``transition`` under WATCH, retrying when another writer won the race."""
        key = self._job_key(job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return None
                    changed = transition(from_json(raw))
                    if changed is None:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return None
                    pipe.multi()  # type: ignore[no-untyped-call]
                    due = due_time(changed)
                    if changed.final:
                        pipe.set(key, to_json(changed), ex=int(self._retention_s))
                    else:
                        pipe.set(key, to_json(changed))
                    if due is None:
                        pipe.zrem(self._due_key, job_id)
                    else:
                        pipe.zadd(self._due_key, {job_id: due})
                    await pipe.execute()
                    return changed
                except WatchError:
                    continue

    async def claim(self, now: float, lease_s: float, token: str) -> Job | None:
        """Claim a due job; another replica claiming the same one first simply wins it."""
        candidates = await self._redis.zrangebyscore(self._due_key, "-inf", now, start=0, num=16)
        for raw_id in candidates:
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            claimed = await self.update(
                job_id, lambda job: job.claim(now, lease_s, token) if job.claimable(now) else None
            )
            if claimed is not None:
                return claimed
            if await self._redis.exists(self._job_key(job_id)) == 0:
                await self._redis.zrem(self._due_key, job_id)
        return None

    async def purge(self, before: float) -> int:
        """Finished jobs expire on their own (``retention_s``)."""
        return 0
