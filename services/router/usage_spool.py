"""The router's durable usage spool: every usage event is on local disk before it is sent to metering.

A request is written here twice: an *intent* when it is admitted (before any provider is called),
then its final event when it ends. The shipper (:mod:`services.router.usage_shipper`) sends final
events to metering and deletes them only once metering acknowledged them, so neither a metering
outage of any length nor a router killed with SIGKILL loses usage: on the next start, the
intents a dead process left behind become events of their own (outcome ERROR, error code
``ROUTER_RESTARTED``, usage = the reservation's estimate) and are shipped like any other.

Why a local SQLite file rather than Redis Streams: it works the same on the embedded defaults and at
scale, with one code path and no extra service to keep durable. One file per router process,
guarded by an exclusive lock, since two processes interleaving intents and recoveries on one file
would "recover" each other's requests in flight. On Kubernetes the spool's directory must be a
volume that survives container restarts (an ``emptyDir`` does, within the pod), or a router that is
restarted loses its spool with the container.

Durability: WAL with ``synchronous=NORMAL``; a committed write is in the OS page cache before
:meth:`UsageSpool.admit` returns, so it survives the process being killed (not a power loss of the
host, which would need ``FULL`` and an fsync per commit).

All SQLite work runs on one dedicated thread, never on the event loop. Writes that arrive together
are committed together (group commit), which keeps the per-request cost to a thread hop and a
shared commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from prometheus_client import Counter

from gateway.metering.v1 import metering_pb2
from gateway_common.config import ConfigError

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Operation = Callable[[sqlite3.Connection], Any]
_Reply = Callable[[Any, BaseException | None], None]
"""Called on the writer thread with an operation's result or exception; it must not raise."""

# Rows move from INTENT to READY once; only READY rows are shipped.
_INTENT = 0
_READY = 1

# Upper bound on the writes committed together; keeps one transaction short.
_MAX_GROUP = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    state INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_usage_spool_state_seq ON usage_spool (state, seq);
"""

RECOVERED = Counter(
    "gateway_usage_spool_recovered_total",
    "Intents left by a router process that died, shipped as ROUTER_RESTARTED events at the next start.",
)
WRITE_ERRORS = Counter("gateway_usage_spool_write_errors_total", "Spool writes that failed (disk full, I/O error).")


class SpoolInUseError(ConfigError):
    """Another process holds the spool's lock: two routers were given one ``metering.spool_path``."""


@dataclass(frozen=True)
class SpooledEvent:
    """A final event waiting to be shipped: its position in the spool and its serialized bytes."""

    seq: int
    payload: bytes


class UsageSpool:
    """Usage events on local disk, written by one thread, locked to one process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock_file: IO[str] | None = None
        self._queue: queue.SimpleQueue[tuple[_Operation, _Reply] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def path(self) -> Path:
        """The spool file."""
        return self._path

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) whenever a final event was written."""
        self._listeners.append(listener)

    async def open(self) -> int:
        """Take the lock, create the schema, and turn a dead process's intents into final events;
        returns how many were recovered. Raises :class:`SpoolInUseError` if another process holds it."""
        self._loop = asyncio.get_running_loop()
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_file))
        try:
            connection = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The thread opening the file cannot be interrupted: let it finish, then give back the
            # connection and the lock it took, so that a cancelled open leaves nothing held.
            with contextlib.suppress(Exception):
                (await opening).close()
            self._release_lock()
            raise
        self._thread = threading.Thread(target=self._run, args=(connection,), name="usage-spool", daemon=True)
        self._thread.start()
        recovered: int = await self._submit(_recover)
        if recovered:
            RECOVERED.inc(recovered)
            log.warning("usage spool %s: %d requests of a previous process recovered", self._path, recovered)
            self._notify()
        return recovered

    async def admit(self, event: metering_pb2.UsageEvent) -> None:
        """Write ``event`` as the intent of a request just admitted; returns once it is on disk.

        ``event`` is what the ledger gets if this process dies before :meth:`complete`.
        """
        await self._submit(_upsert(event.event_id, _INTENT, event.SerializeToString(), overwrite=False))

    async def put_ready(self, events: list[metering_pb2.UsageEvent]) -> None:
        """Write final ``events`` (replacing any row with the same event id); returns once on disk.

        For events taken over from another spool: the ledger is idempotent by event id, so an event
        that was already shipped from there is recorded once.
        """

        def run(connection: sqlite3.Connection) -> None:
            for event in events:
                _upsert(event.event_id, _READY, event.SerializeToString(), overwrite=True)(connection)

        await self._submit(run)
        self._notify()

    def complete(self, event: metering_pb2.UsageEvent) -> None:
        """Replace the request's intent with its final ``event``, without waiting for the write.

        Not waiting keeps the response off the disk; if the process dies before the write, the
        intent stands in for the event (it is metered, as ROUTER_RESTARTED).
        """
        if self._thread is None:
            # Only a request that was never admitted (its intent could not be written) gets here.
            WRITE_ERRORS.inc()
            log.error("usage spool closed; final event %s not written", event.event_id)
            return
        self._enqueue(_upsert(event.event_id, _READY, event.SerializeToString(), overwrite=True), self._completed)

    async def ready(self, limit: int, max_bytes: int) -> list[SpooledEvent]:
        """The oldest final events, at most ``limit`` and about ``max_bytes`` (at least one)."""
        return await self._submit(lambda connection: _ready(connection, limit, max_bytes))  # type: ignore[no-any-return]

    async def remove(self, events: list[SpooledEvent]) -> None:
        """Delete events metering acknowledged."""
        seqs = [(event.seq,) for event in events]
        await self._submit(lambda connection: connection.executemany("DELETE FROM usage_spool WHERE seq = ?", seqs))

    async def counts(self) -> tuple[int, int]:
        """How many (intents, final events) the spool holds."""
        return await self._submit(_counts)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Finish the writes queued, stop the thread, release the lock; what is left stays on disk."""
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    # -- the writer thread ----------------------------------------------------------------------

    def _open_file(self) -> sqlite3.Connection:
        self._lock()
        # Opened here so that an unusable file fails open(), not the writer thread; from now on
        # only the writer thread uses the connection.
        try:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except BaseException:
            self._release_lock()
            raise
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except BaseException:
            connection.close()
            self._release_lock()
            raise
        return connection

    def _lock(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self._path.with_name(self._path.name + ".lock")
        lock_file = lock_path.open("a+")
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise SpoolInUseError(
                f"usage spool {self._path} is in use by another process (pid {holder}); give every router "
                "its own metering.spool_path (GATEWAY_METERING_SPOOL_PATH)"
            ) from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    def _run(self, connection: sqlite3.Connection) -> None:
        try:
            stopping = False
            while not stopping:
                item = self._queue.get()
                if item is None:
                    break
                group = [item]
                while len(group) < _MAX_GROUP:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    group.append(more)
                _run_group(connection, group)
        finally:
            connection.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _enqueue(self, operation: _Operation, reply: _Reply) -> None:
        if self._thread is None:
            raise RuntimeError("the usage spool is not open")
        self._queue.put((operation, reply))

    async def _submit(self, operation: _Operation) -> Any:
        # An asyncio future the writer resolves through the loop: per write, this costs one
        # call_soon_threadsafe, where a concurrent.futures.Future (its Condition, its lock) wrapped by
        # wrap_future cost several times as much, twice per request.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()

        def reply(result: Any, exception: BaseException | None) -> None:
            _call_soon(loop, _resolve, waiter, result, exception)

        self._enqueue(operation, reply)
        return await waiter

    def _completed(self, result: Any, exception: BaseException | None) -> None:
        # Runs on the writer thread: hand over to the event loop.
        if exception is None and self._loop is not None:
            _call_soon(self._loop, self._notify)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()


def _run_group(connection: sqlite3.Connection, group: list[tuple[_Operation, _Reply]]) -> None:
    """Run the operations in one transaction; if it fails, one transaction each, so that one bad
    write fails alone."""
    try:
        connection.execute("BEGIN IMMEDIATE")
        results = [operation(connection) for operation, _ in group]
        connection.execute("COMMIT")
    except Exception:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        for operation, reply in group:
            try:
                connection.execute("BEGIN IMMEDIATE")
                result = operation(connection)
                connection.execute("COMMIT")
            except Exception as exc:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                WRITE_ERRORS.inc()
                log.error("usage spool write failed: %s", exc)
                reply(None, exc)
            else:
                reply(result, None)
        return
    for (_, reply), result in zip(group, results, strict=True):
        reply(result, None)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """``loop.call_soon_threadsafe`` from the writer thread, which must never raise there: a loop
    that has closed (the process is stopping) has nobody left to tell."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def _resolve(waiter: asyncio.Future[Any], result: Any, exception: BaseException | None) -> None:
    """Hand the outcome to whoever waits, on the loop. A waiter that was cancelled (a client left
    mid-write) is left alone: the write itself is done."""
    if waiter.done():
        return
    if exception is not None:
        waiter.set_exception(exception)
    else:
        waiter.set_result(result)


def _upsert(event_id: str, state: int, payload: bytes, *, overwrite: bool) -> _Operation:
    def run(connection: sqlite3.Connection) -> None:
        if overwrite:
            connection.execute(
                "INSERT INTO usage_spool (event_id, state, payload) VALUES (?, ?, ?) "
                "ON CONFLICT (event_id) DO UPDATE SET state = excluded.state, payload = excluded.payload",
                (event_id, state, payload),
            )
        else:
            connection.execute(
                "INSERT INTO usage_spool (event_id, state, payload) VALUES (?, ?, ?)", (event_id, state, payload)
            )

    return run


def _recover(connection: sqlite3.Connection) -> int:
    cursor = connection.execute("UPDATE usage_spool SET state = ? WHERE state = ?", (_READY, _INTENT))
    return cursor.rowcount


def _ready(connection: sqlite3.Connection, limit: int, max_bytes: int) -> list[SpooledEvent]:
    rows = connection.execute(
        "SELECT seq, payload FROM usage_spool WHERE state = ? ORDER BY seq LIMIT ?", (_READY, limit)
    ).fetchall()
    events: list[SpooledEvent] = []
    size = 0
    for seq, payload in rows:
        if events and size + len(payload) > max_bytes:
            break
        events.append(SpooledEvent(seq, payload))
        size += len(payload)
    return events


def _counts(connection: sqlite3.Connection) -> tuple[int, int]:
    rows = dict(connection.execute("SELECT state, COUNT(*) FROM usage_spool GROUP BY state").fetchall())
    return int(rows.get(_INTENT, 0)), int(rows.get(_READY, 0))
