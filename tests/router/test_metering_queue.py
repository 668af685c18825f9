"""The router's usage spool and shipper: durable across the process, never dropping, shipped at least once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.metering.v1 import metering_pb2
from services.router.usage_intent import RESTARTED_ERROR_CODE
from services.router.usage_shipper import MAX_BATCH_BYTES, REFUSED_BATCHES, UsageShipper
from services.router.usage_spool import SpoolInUseError, UsageSpool


class FakeStub:
    """Metering that fails while ``down`` (with ``code``), else keeps every batch."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.batches: list[list[metering_pb2.UsageEvent]] = []
        self.down = False
        self.code = code
        self.calls = 0

    async def RecordEvents(self, request: metering_pb2.RecordEventsRequest, **options: Any) -> Any:
        self.calls += 1
        if self.down:
            raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata())
        self.batches.append(list(request.events))
        return metering_pb2.RecordEventsResponse(recorded=len(request.events))

    def shipped(self) -> list[str]:
        return [event.event_id for batch in self.batches for event in batch]


class FakeClock:
    """A clock that only ``sleep`` moves: a ten-minute outage takes no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def _event(i: int, log_bytes: int = 0, **fields: Any) -> metering_pb2.UsageEvent:
    event = metering_pb2.UsageEvent(event_id=f"e{i}", request_id="same-client-id", tenant_id="acme", **fields)
    if log_bytes:
        event.prompt_log.request_json = "x" * log_bytes
    return event


async def _until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[UsageSpool]:
    opened = UsageSpool(tmp_path / "spool.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_only_final_events_are_ready_and_a_final_event_replaces_its_intent(spool: UsageSpool) -> None:
    await spool.admit(_event(1, error_code=RESTARTED_ERROR_CODE))
    await spool.admit(_event(2, error_code=RESTARTED_ERROR_CODE))
    spool.complete(_event(1, outcome=metering_pb2.OUTCOME_SUCCESS))

    assert await spool.counts() == (1, 1)
    ready = await spool.ready(10, MAX_BATCH_BYTES)
    assert [metering_pb2.UsageEvent.FromString(e.payload).outcome for e in ready] == [metering_pb2.OUTCOME_SUCCESS]
    await spool.remove(ready)
    assert await spool.counts() == (1, 0)


async def test_intents_of_a_process_that_ended_are_recovered_at_the_next_open(tmp_path: Path) -> None:
    first = UsageSpool(tmp_path / "spool.db")
    await first.open()
    await first.admit(_event(1, error_code=RESTARTED_ERROR_CODE, prompt_tokens=10, completion_tokens=90))
    await first.admit(_event(2))
    first.complete(_event(2, outcome=metering_pb2.OUTCOME_SUCCESS))
    await first.close()

    second = UsageSpool(tmp_path / "spool.db")
    try:
        assert await second.open() == 1
        events = [metering_pb2.UsageEvent.FromString(e.payload) for e in await second.ready(10, MAX_BATCH_BYTES)]
        assert [(e.event_id, e.error_code, e.completion_tokens) for e in events] == [
            ("e1", RESTARTED_ERROR_CODE, 90),
            ("e2", "", 0),
        ]
    finally:
        await second.close()


async def test_a_second_spool_on_the_same_path_fails_fast_naming_the_setting(spool: UsageSpool) -> None:
    with pytest.raises(SpoolInUseError, match=rf"pid {os.getpid()}.*GATEWAY_METERING_SPOOL_PATH"):
        await UsageSpool(spool.path).open()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.metering.v1 import metering_pb2
    from services.router.usage_spool import UsageSpool

    async def main() -> None:
        spool = UsageSpool(sys.argv[1])
        await spool.open()
        for i in range(100_000):
            await spool.admit(metering_pb2.UsageEvent(event_id=f"e{i}"))
            print(i, flush=True)  # this write returned: it must survive a SIGKILL

    asyncio.run(main())
    """
)


async def _recover_ids(path: Path) -> tuple[int, set[str]]:
    spool = UsageSpool(path)  # the dead writer's lock went with it
    try:
        recovered = await spool.open()
        ready = await spool.ready(10**6, 1 << 40)
        return recovered, {metering_pb2.UsageEvent.FromString(e.payload).event_id for e in ready}
    finally:
        await spool.close()


def test_every_write_that_returned_survives_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    confirmed = -1
    try:
        while confirmed < 300:
            line = writer.stdout.readline()
            assert line, "the writer ended early"
            confirmed = int(line)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
    # Lines already in the pipe are writes that returned before the kill, too.
    confirmed = max([confirmed, *(int(line) for line in writer.stdout.read().split())])
    writer.stdout.close()

    recovered, ids = asyncio.run(_recover_ids(path))

    assert recovered >= confirmed + 1
    assert {f"e{i}" for i in range(confirmed + 1)} <= ids


async def test_batches_are_capped_by_count_and_size_and_drained(spool: UsageSpool) -> None:
    stub = FakeStub()
    shipper = UsageShipper(spool, stub, batch_size=3, flush_interval_s=0.01)  # type: ignore[arg-type]
    for i in range(12):
        event = _event(i, log_bytes=3_000_000 if i >= 7 else 0)
        await spool.admit(event)
        spool.complete(event)
    shipper.start()
    await shipper.drain()

    assert stub.shipped() == [f"e{i}" for i in range(12)]
    assert all(len(batch) <= 3 for batch in stub.batches)
    assert all(sum(e.ByteSize() for e in batch) <= MAX_BATCH_BYTES for batch in stub.batches)
    assert await spool.counts() == (0, 0)


async def test_a_ten_minute_outage_drops_nothing_and_backoff_stays_capped(spool: UsageSpool) -> None:
    stub, clock = FakeStub(), FakeClock()
    stub.down = True
    shipper = UsageShipper(spool, stub, batch_size=50, flush_interval_s=0.01, max_backoff_s=5.0, sleep=clock.sleep)  # type: ignore[arg-type]
    shipper.start()
    sent = 0
    # Events keep arriving through ten (fake) minutes of metering answering UNAVAILABLE.
    while clock.now < 600:
        for _ in range(20):
            event = _event(sent)
            await spool.admit(event)
            spool.complete(event)
            sent += 1
        await _until(lambda rounds=sent // 20: len(clock.sleeps) > rounds)
    assert stub.batches == []
    assert await spool.counts() == (0, sent)
    stub.down = False
    await _until(lambda: len(stub.shipped()) >= sent)
    await shipper.drain()

    assert sorted(stub.shipped()) == sorted(f"e{i}" for i in range(sent))
    assert clock.now >= 600
    assert max(clock.sleeps) == 5.0
    assert await spool.counts() == (0, 0)


async def test_a_batch_refused_as_a_whole_is_kept_and_counted(spool: UsageSpool) -> None:
    stub, clock = FakeStub(grpc.StatusCode.INVALID_ARGUMENT), FakeClock()
    stub.down = True
    refused_before = REFUSED_BATCHES._value.get()
    shipper = UsageShipper(spool, stub, batch_size=10, flush_interval_s=0.01, sleep=clock.sleep)  # type: ignore[arg-type]
    await spool.admit(_event(1))
    spool.complete(_event(1))
    shipper.start()
    await _until(lambda: stub.calls >= 3)

    assert REFUSED_BATCHES._value.get() - refused_before >= 3
    assert await spool.counts() == (0, 1)
    assert set(clock.sleeps) == {5.0}  # the longest backoff: retrying soon would be refused again
    stub.down = False
    await _until(lambda: stub.shipped() == ["e1"])
    await shipper.drain()


async def test_drain_with_metering_down_keeps_the_rest_for_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    stub = FakeStub()
    stub.down = True
    spool = UsageSpool(path)
    await spool.open()
    shipper = UsageShipper(spool, stub, batch_size=10, flush_interval_s=0.01)  # type: ignore[arg-type]
    shipper.start()
    for i in range(5):
        await spool.admit(_event(i))
        spool.complete(_event(i))
    await shipper.drain(timeout_s=0.5)
    await spool.close()

    stub.down = False
    again = UsageSpool(path)
    await again.open()
    next_shipper = UsageShipper(again, stub, batch_size=10, flush_interval_s=0.01)  # type: ignore[arg-type]
    next_shipper.start()
    await _until(lambda: len(stub.shipped()) == 5)
    await next_shipper.drain()
    await again.close()
    assert sorted(stub.shipped()) == [f"e{i}" for i in range(5)]
