"""Ships the usage spool to metering: at least once, in order, and never dropping anything.

Events leave the spool only after metering acknowledged the batch that carried them. A failure of
any kind (metering down, a deadline, the database behind it restarting) is retried with capped
exponential backoff, for as long as it takes: there is no retry count, queue size or age after
which an event is given up. Metering keeps one row per event id, so a batch re-sent after a lost
acknowledgement is not counted twice.

Metering quarantines invalid events one by one, so INVALID_ARGUMENT for a whole batch should not
happen; if it does, the batch is kept (and retried at the longest backoff) and an alert metric
counts it, because deleting it would lose usage on a bug that can be fixed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum

import grpc
from prometheus_client import Counter

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from services.router.usage_spool import SpooledEvent, UsageSpool

log = logging.getLogger(__name__)

# Well under the services' message ceiling, even with prompt logs (each at most 2 x 1 MiB).
MAX_BATCH_BYTES = 8 * 1024 * 1024

SHIPPED = Counter("gateway_usage_events_shipped_total", "Usage events metering acknowledged.")
SEND_FAILURES = Counter(
    "gateway_usage_batch_send_failures_total", "Batches metering did not acknowledge (kept and retried).", ["code"]
)
REFUSED_BATCHES = Counter(
    "gateway_usage_batches_refused_total",
    "Batches metering refused as a whole (INVALID_ARGUMENT): kept in the spool; alert on any.",
)
QUARANTINED = Counter("gateway_usage_events_quarantined_total", "Events metering acknowledged by quarantining them.")


class _Sent(Enum):
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    REFUSED = "refused"


class UsageShipper:
    """The task that empties the spool into metering."""

    def __init__(
        self,
        spool: UsageSpool,
        stub: metering_pb2_grpc.MeteringServiceAsyncStub,
        *,
        batch_size: int,
        flush_interval_s: float,
        initial_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        rpc_timeout_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._spool = spool
        self._stub = stub
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._rpc_timeout_s = rpc_timeout_s
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._unsent = 0
        self._wakeup = asyncio.Event()
        spool.subscribe(self.notify)

    def start(self) -> None:
        """Start shipping (what the spool already holds first)."""
        self._task = asyncio.create_task(self._run(), name="usage-shipper")

    def notify(self) -> None:
        """A final event was spooled; wake the shipper once a batch is full (else it waits the interval)."""
        self._unsent += 1
        if self._unsent >= self._batch_size:
            self._wakeup.set()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Ship what can be shipped within ``timeout_s``, then stop; the rest stays in the spool."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if not done:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            intents, ready = await self._spool.counts()
            log.warning(
                "usage spool not emptied within %.0fs: %d events kept in %s for the next start",
                timeout_s,
                ready + intents,
                self._spool.path,
            )

    async def _run(self) -> None:
        while True:
            try:
                await self._ship()
                return
            except Exception:
                # The spool itself failed (disk full, I/O error): the events are still where they
                # were, so start over after a pause rather than ending the shipper for good.
                log.exception("usage shipper failed; restarting in %.0fs", self._max_backoff_s)
                await self._sleep(self._max_backoff_s)

    async def _ship(self) -> None:
        backoff = self._initial_backoff_s
        while True:
            batch = await self._spool.ready(self._batch_size, MAX_BATCH_BYTES)
            self._unsent = max(0, self._unsent - len(batch))
            if not batch:
                if self._closing:
                    return
                await self._wait(self._flush_interval_s)
                continue
            sent = await self._send(batch)
            if sent is _Sent.ACKNOWLEDGED:
                await self._spool.remove(batch)
                backoff = self._initial_backoff_s
                if len(batch) < self._batch_size and not self._closing:
                    # Let a batch form rather than sending one event per request under load.
                    await self._wait(self._flush_interval_s)
                continue
            # A refused batch will not be accepted by retrying soon: wait the longest.
            await self._sleep(self._max_backoff_s if sent is _Sent.REFUSED else backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout_s)
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def _send(self, batch: list[SpooledEvent]) -> _Sent:
        """Send ``batch``; whether metering acknowledged it, failed to, or refused it."""
        request = metering_pb2.RecordEventsRequest(
            events=[metering_pb2.UsageEvent.FromString(event.payload) for event in batch]
        )
        try:
            response = await self._stub.RecordEvents(request, timeout=self._rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            SEND_FAILURES.labels(code.name).inc()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                REFUSED_BATCHES.inc()
                log.error("metering refused a usage batch of %d events; kept for retry: %s", len(batch), exc.details())
                return _Sent.REFUSED
            log.warning("usage batch of %d events not acknowledged (%s); will retry", len(batch), code.name)
            return _Sent.FAILED
        SHIPPED.inc(len(batch))
        if response.quarantined:
            QUARANTINED.inc(response.quarantined)
            log.warning("metering quarantined %d of %d usage events", response.quarantined, len(batch))
        return _Sent.ACKNOWLEDGED
