"""Spools of routers that are gone are taken over by a live router; live and fresh ones are not."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from gateway.metering.v1 import metering_pb2
from services.router.spool_adoption import adopt_orphans, orphan_candidates, spool_path
from services.router.usage_spool import UsageSpool


def _event(event_id: str) -> metering_pb2.UsageEvent:
    return metering_pb2.UsageEvent(event_id=event_id, request_id=event_id, tenant_id="acme")


async def _left_behind(path: Path, ready: list[str], intents: list[str], age_s: float = 120.0) -> None:
    """A spool as a router that died leaves it: final events, intents, no lock holder."""
    spool = UsageSpool(path)
    await spool.open()
    await spool.put_ready([_event(i) for i in ready])
    for event_id in intents:
        await spool.admit(_event(event_id))
    await spool.close()
    _age(_files(path.parent, path.name + "*"), age_s)


def _files(folder: Path, pattern: str) -> list[Path]:
    return list(folder.glob(pattern))


def _age(files: list[Path], seconds: float) -> None:
    old = time.time() - seconds
    for file in files:
        os.utime(file, (old, old))


async def _ids(spool: UsageSpool) -> set[str]:
    return {metering_pb2.UsageEvent.FromString(e.payload).event_id for e in await spool.ready(1000, 1 << 30)}


async def test_a_dead_replicas_spool_is_moved_into_a_live_one_and_removed(tmp_path: Path) -> None:
    template = str(tmp_path / "router-{hostname}.db")
    dead = spool_path(template, "router-old")
    await _left_behind(dead, ["a", "b"], ["c"])
    own = UsageSpool(spool_path(template, "router-new"))
    await own.open()
    try:
        assert await adopt_orphans(own, template) == 3
        assert await _ids(own) == {"a", "b", "c"}, "final events and the dead process's intents"
        assert not _files(tmp_path, "router-old.db*"), "the orphan's files are gone"
        assert await adopt_orphans(own, template) == 0
    finally:
        await own.close()


async def test_live_and_recently_written_spools_are_left_alone(tmp_path: Path) -> None:
    template = str(tmp_path / "router-{hostname}.db")
    live = UsageSpool(spool_path(template, "router-live"))
    await live.open()
    await live.put_ready([_event("live")])
    restarting = spool_path(template, "router-restarting")
    await _left_behind(restarting, ["r"], [], age_s=0)
    own = UsageSpool(spool_path(template, "router-new"))
    await own.open()
    try:
        # The live file is old enough but locked; the other one was written a moment ago.
        _age(_files(tmp_path, "router-live.db*"), 120)
        assert await adopt_orphans(own, template) == 0
        assert await _ids(own) == set()
        assert _files(restarting.parent, restarting.name)
    finally:
        await own.close()
        await live.close()


def test_without_the_placeholder_nothing_is_a_candidate(tmp_path: Path) -> None:
    (tmp_path / "metering.db").write_bytes(b"")
    (tmp_path / "auth.db").write_bytes(b"")
    own = tmp_path / "usage-spool.db"
    assert orphan_candidates(str(own), own) == []
    assert orphan_candidates(str(tmp_path / "{hostname}.db"), own) == [tmp_path / "auth.db", tmp_path / "metering.db"]


async def test_a_router_with_a_placeholder_spool_adopts_at_start(tmp_path: Path) -> None:
    """The router wires adoption in: a dead replica's file is taken over when a router starts."""
    from gateway_common.config import GatewayConfig, MeteringConfig, RateLimitConfig
    from services.router.server import build

    template = str(tmp_path / "router-{hostname}.db")
    dead = spool_path(template, "router-gone")
    await _left_behind(dead, ["a"], ["b"])
    config = GatewayConfig(
        metering=MeteringConfig(spool_path=template), ratelimit=RateLimitConfig(rebuild_from_ledger=False)
    )
    app = build(config, listen="127.0.0.1:0")
    await app.start()
    try:
        async with asyncio.timeout(10):
            while _files(tmp_path, "router-gone.db*"):
                await asyncio.sleep(0.05)
    finally:
        await app.stop(0)
