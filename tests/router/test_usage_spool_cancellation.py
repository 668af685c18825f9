"""A caller cancelled while its spool write is in flight (a client that left) must not break the
spool: the write still lands, and the writer thread goes on serving every later write."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.metering.v1 import metering_pb2
from services.router.usage_spool import UsageSpool


def _event(event_id: str) -> metering_pb2.UsageEvent:
    return metering_pb2.UsageEvent(event_id=event_id, request_id=event_id, tenant_id="t", model="mock:demo")


async def test_cancelled_writers_leave_the_writer_thread_serving(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "spool.db")
    await spool.open()
    try:
        # Many admits cancelled at once, so that some are cancelled while queued or mid-group.
        writers = [asyncio.create_task(spool.admit(_event(f"cancelled-{i}"))) for i in range(200)]
        await asyncio.sleep(0)
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        # The thread is alive: later writes complete (they would hang forever otherwise).
        async with asyncio.timeout(10):
            await spool.put_ready([_event("after")])
            intents, ready = await spool.counts()
        assert ready == 1
        assert intents <= 200
    finally:
        async with asyncio.timeout(10):
            await spool.close()
