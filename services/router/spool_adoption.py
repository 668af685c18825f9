"""Spools left behind by routers that are gone, taken over by a live one.

Replicas that share one volume each write ``…-{hostname}.db`` (``metering.spool_path`` with a
``{hostname}`` placeholder). A replica that died and was re-created comes back under another host
name, so nobody would ever open its old file again: at start (and every ``interval_s``), a router
takes every such file that nobody has written for ``min_age_s`` and whose lock it can get — only a
live process holds one — turns its intents into events, moves its events into its own spool, and
deletes it. The age keeps a replica that is merely restarting (under the same host name) from
finding its own file taken while it comes back. Moving is safe to repeat: events keep
their ids and the ledger records each id once.

Without the placeholder nothing is adopted: the spool's folder may hold other files (the embedded
default keeps its SQLite databases next to it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

from prometheus_client import Counter

from gateway.metering.v1 import metering_pb2
from services.router.usage_spool import SpoolInUseError, UsageSpool

log = logging.getLogger(__name__)

PLACEHOLDER = "{hostname}"

ADOPTED = Counter(
    "gateway_usage_spool_adopted_events_total", "Usage events taken over from spools of routers that are gone."
)

_BATCH = 500
_BATCH_BYTES = 8 * 1024 * 1024


def spool_path(template: str, hostname: str | None = None) -> Path:
    """The spool file of this process: ``template`` with ``{hostname}`` filled in."""
    return Path(template.replace(PLACEHOLDER, hostname or socket.gethostname()))


def orphan_candidates(template: str, own: Path) -> list[Path]:
    """Spool files of other hosts that ``template`` names (none without the placeholder)."""
    if PLACEHOLDER not in template:
        return []
    pattern = Path(template)
    name = pattern.name.replace(PLACEHOLDER, "*")
    return sorted(path for path in pattern.parent.glob(name) if path != own and path.is_file())


def _remove(path: Path) -> None:
    for leftover in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", ".lock"))):
        leftover.unlink(missing_ok=True)


def _last_written(path: Path) -> float:
    times = [p.stat().st_mtime for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
    return max(times, default=0.0)


async def adopt_orphans(spool: UsageSpool, template: str, min_age_s: float = 60.0) -> int:
    """Move the events of every unlocked spool ``template`` names, untouched for ``min_age_s``, into
    ``spool``; returns how many."""
    moved = 0
    # A handful of stat calls, but on a network volume each can block: off the event loop.
    now = time.time()
    candidates = await asyncio.to_thread(
        lambda: [p for p in orphan_candidates(template, spool.path) if now - _last_written(p) >= min_age_s]
    )
    for path in candidates:
        orphan = UsageSpool(path)
        try:
            await orphan.open()  # takes its lock and turns its intents into events
        except SpoolInUseError:
            continue  # a live router's
        except BaseException:
            await orphan.close()  # e.g. cancelled by a stopping router after the file was opened
            raise
        try:
            while events := await orphan.ready(_BATCH, _BATCH_BYTES):
                await spool.put_ready([metering_pb2.UsageEvent.FromString(e.payload) for e in events])
                await orphan.remove(events)
                moved += len(events)
        finally:
            await orphan.close()
        await asyncio.to_thread(_remove, path)
        log.warning("usage spool %s of a router that is gone: taken over", path)
    if moved:
        ADOPTED.inc(moved)
    return moved
