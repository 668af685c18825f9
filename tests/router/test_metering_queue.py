"""The router's metering queue: batches by count and by size, retries, drains on shutdown."""

from __future__ import annotations

from typing import Any

import grpc

from gateway.metering.v1 import metering_pb2
from services.router.metering_queue import _MAX_BATCH_BYTES, MeteringQueue


class FakeStub:
    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[metering_pb2.UsageEvent]] = []
        self.failures = failures

    async def RecordEvents(self, request: metering_pb2.RecordEventsRequest, **options: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        self.batches.append(list(request.events))
        return metering_pb2.RecordEventsResponse(recorded=len(request.events))


def _event(i: int, log_bytes: int = 0) -> metering_pb2.UsageEvent:
    event = metering_pb2.UsageEvent(request_id=f"r{i}")
    if log_bytes:
        event.prompt_log.request_json = "x" * log_bytes
    return event


async def test_batches_are_capped_by_count_and_size_and_drained() -> None:
    stub = FakeStub()
    queue = MeteringQueue(stub, batch_size=3, flush_interval_s=0.05, queue_limit=100)  # type: ignore[arg-type]
    for i in range(7):
        queue.put(_event(i))
    for i in range(7, 12):
        queue.put(_event(i, log_bytes=3_000_000))
    queue.start()
    await queue.drain()
    sent = [e.request_id for batch in stub.batches for e in batch]
    assert sent == [f"r{i}" for i in range(12)]
    assert all(len(batch) <= 3 for batch in stub.batches)
    assert all(sum(e.ByteSize() for e in batch) <= _MAX_BATCH_BYTES + 3_100_000 for batch in stub.batches)
    assert max(sum(e.ByteSize() for e in b) for b in stub.batches) > 3_000_000


async def test_a_failed_batch_is_retried() -> None:
    stub = FakeStub(failures=2)
    queue = MeteringQueue(stub, batch_size=10, flush_interval_s=0.01, queue_limit=10)  # type: ignore[arg-type]
    queue.start()
    queue.put(_event(1))
    await queue.drain()
    assert [[e.request_id for e in b] for b in stub.batches] == [["r1"]]


def test_a_full_queue_drops_new_events_instead_of_growing() -> None:
    queue = MeteringQueue(FakeStub(), batch_size=10, flush_interval_s=1, queue_limit=2)  # type: ignore[arg-type]
    for i in range(5):
        queue.put(_event(i))
    assert queue._queue.qsize() == 2
