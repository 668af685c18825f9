"""The embedded default's job queue: one SQLite file per router, used from a worker thread.

sqlite3 blocks, so every call runs in ``asyncio.to_thread`` on one connection guarded by a lock
(SQLite serialises writers anyway). ``BEGIN IMMEDIATE`` takes the write lock before the read, so
a read-transition-write is atomic even if two processes opened the same file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from services.router.jobs.model import Job
from services.router.jobs.store import Transition, due_time, from_json, to_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    due REAL,
    finished_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_due ON jobs (due) WHERE due IS NOT NULL;
"""


class SqliteJobStore:
    """Jobs in a SQLite file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def open(self) -> None:
        """Create the file and schema."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
        # Durable on commit: a job the client was told is queued survives a power cut too.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db

    async def close(self) -> None:
        """Close the file."""

        def run() -> None:
            # Under the lock: a call still running in its thread (one whose awaiting task was
            # cancelled) must finish before the connection goes; closing under it crashes sqlite3.
            with self._lock:
                if self._db is not None:
                    db, self._db = self._db, None
                    db.close()

        await asyncio.to_thread(run)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("job store is not open")
        return self._db

    async def create(self, job: Job) -> None:
        """Store a new job."""

        def run() -> None:
            with self._lock:
                self._conn().execute(
                    "INSERT INTO jobs (id, tenant_id, created_at, due, finished_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                    (job.id, job.tenant_id, job.created_at, due_time(job), job.finished_at, to_json(job)),
                )

        await asyncio.to_thread(run)

    async def get(self, job_id: str) -> Job | None:
        """The job, or None."""

        def run() -> Job | None:
            with self._lock:
                row = self._conn().execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return from_json(row[0]) if row else None

        return await asyncio.to_thread(run)

    async def list(self, tenant_id: str, limit: int, after: str) -> tuple[list[Job], bool]:
        """The tenant's jobs, newest first, after ``after``."""

        def run() -> tuple[list[Job], bool]:
            with self._lock:
                db = self._conn()
                if after:
                    cursor = db.execute(
                        "SELECT created_at FROM jobs WHERE id = ? AND tenant_id = ?", (after, tenant_id)
                    )
                    anchor = cursor.fetchone()
                    if anchor is None:
                        return [], False
                    rows = db.execute(
                        "SELECT data FROM jobs WHERE tenant_id = ? AND (created_at < ? OR (created_at = ? AND id < ?))"
                        " ORDER BY created_at DESC, id DESC LIMIT ?",
                        (tenant_id, anchor[0], anchor[0], after, limit + 1),
                    ).fetchall()
                else:
                    rows = db.execute(
                        "SELECT data FROM jobs WHERE tenant_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                        (tenant_id, limit + 1),
                    ).fetchall()
            jobs = [from_json(r[0]) for r in rows]
            return jobs[:limit], len(jobs) > limit

        return await asyncio.to_thread(run)

    def _apply(self, db: sqlite3.Connection, job_id: str, transition: Transition) -> Job | None:
        row = db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        changed = transition(from_json(row[0]))
        if changed is None:
            return None
        db.execute(
            "UPDATE jobs SET due = ?, finished_at = ?, data = ? WHERE id = ?",
            (due_time(changed), changed.finished_at, to_json(changed), job_id),
        )
        return changed

    def _in_transaction(self, work: Transition, job_id: str) -> Job | None:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = self._apply(db, job_id, work)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    async def update(self, job_id: str, transition: Transition) -> Job | None:
        """Apply ``transition`` in one write transaction."""
        return await asyncio.to_thread(self._in_transaction, transition, job_id)

    async def claim(self, now: float, lease_s: float, token: str) -> Job | None:
        """Claim the job due first."""

        def run() -> Job | None:
            with self._lock:
                db = self._conn()
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute(
                        "SELECT id FROM jobs WHERE due IS NOT NULL AND due <= ? ORDER BY due LIMIT 1", (now,)
                    ).fetchone()
                    claimed = (
                        self._apply(
                            db, row[0], lambda job: job.claim(now, lease_s, token) if job.claimable(now) else None
                        )
                        if row
                        else None
                    )
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return claimed

        return await asyncio.to_thread(run)

    async def purge(self, before: float) -> int:
        """Delete jobs that ended before ``before``."""

        def run() -> int:
            with self._lock:
                return (
                    self._conn()
                    .execute("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (before,))
                    .rowcount
                )

        return await asyncio.to_thread(run)
