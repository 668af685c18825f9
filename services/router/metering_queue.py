"""Sends usage events to metering in batches, off the response's critical path.

Events wait in a bounded queue; one background task sends them in batches (by size or time).
A failed batch is retried with backoff — the ledger ignores duplicate request ids, so a retry
never double counts. When the queue is full (metering down for long), new events are dropped and
counted rather than letting memory grow without bound.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from prometheus_client import Counter

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc

log = logging.getLogger(__name__)

# Well under the services' message ceiling, even with prompt logs (each at most 2 x 1 MiB).
_MAX_BATCH_BYTES = 8 * 1024 * 1024

DROPPED = Counter("gateway_metering_events_dropped_total", "Usage events dropped (queue full or metering down).")


class MeteringQueue:
    """A bounded queue of usage events and the task that flushes it."""

    def __init__(
        self,
        stub: metering_pb2_grpc.MeteringServiceAsyncStub,
        *,
        batch_size: int,
        flush_interval_s: float,
        queue_limit: int,
        max_retries: int = 5,
    ) -> None:
        self._stub = stub
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._queue: asyncio.Queue[metering_pb2.UsageEvent] = asyncio.Queue(maxsize=queue_limit)
        self._max_retries = max_retries
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the flushing task."""
        self._task = asyncio.create_task(self._run(), name="metering-flush")

    def put(self, event: metering_pb2.UsageEvent) -> None:
        """Queue an event without waiting; drop it (counted) when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            DROPPED.inc()
            log.warning("metering queue full; usage event dropped", extra={"dropped_request_id": event.request_id})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self._closing and self._queue.empty()):
            try:
                batch = [await asyncio.wait_for(self._queue.get(), self._flush_interval_s)]
            except TimeoutError:
                continue
            deadline = loop.time() + self._flush_interval_s
            size = batch[0].ByteSize()
            while len(batch) < self._batch_size and size < _MAX_BATCH_BYTES:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    size += batch[-1].ByteSize()
                    continue
                remaining = deadline - loop.time()
                if self._closing or remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
                size += batch[-1].ByteSize()
            await self._send(batch)

    async def _send(self, batch: list[metering_pb2.UsageEvent]) -> None:
        delay = 0.2
        for attempt in range(self._max_retries):
            try:
                await self._stub.RecordEvents(metering_pb2.RecordEventsRequest(events=batch), timeout=10)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT or attempt == self._max_retries - 1:
                    DROPPED.inc(len(batch))
                    log.error("usage batch of %d events dropped: %s", len(batch), exc.details())
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Send everything queued, then end the task (part of graceful shutdown)."""
        self._closing = True
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, timeout_s)
        except TimeoutError:
            log.error("metering queue not drained within %.0fs; %d events lost", timeout_s, self._queue.qsize())
