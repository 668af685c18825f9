"""Rebuilding lost day and month counters from the ledger.

The ledger (metering) is the source of truth for what was used; the counters are a fast cache of
it for admission. When the counters are lost (Redis restarted empty, a memory store's process
restarted), they are rebuilt, not reset: the ledger is summed per (tenant, key, model) since the
start of the month and of the day, and every descriptor the router counts against is raised to
that sum. Minute windows are not rebuilt: they refill within a minute and the ledger is not
precise to the second.

The descriptors are the router's: ``tenant``, ``tenant & key``, and ``tenant & key & model``
(``services/router/quotas.py``); the ledger's columns are named after the same three entries. A row
served by a tenant's own upstream credential also counts against ``credential`` (its windows,
:func:`services.ratelimit.credentials.credential_descriptor`), so those survive the loss too.

While a rebuild is pending, Acquire refuses (degraded, fail closed) whatever the outage policy:
admitting on empty counters is exactly the overspend this exists to prevent. A rebuild first waits
``grace_s`` once it has seen the counters lost, so that the requests admitted on them that were in
flight have finished and their usage events reached the ledger. That holds at start as at run
time: a limiter that starts on lost counters (a memory store's new process, a Redis that came back
empty) may be replacing one that died with requests in flight, and the routers' spools ship a
finished request's event within their flush interval, so a sum taken at once would miss them. It
also outlasts a router's quota block (``quota_blocks.max_age_s``), so what a block of the lost
counters admitted is in the sum. What remains unbounded by this is the usage of requests that were
in flight at the loss and still running after the grace: each of those is missing from both the
counters and the sum, which bounds the error by those requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import grpc
from google.protobuf import timestamp_pb2

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from services.ratelimit.quotas import Descriptor, Unit, Window, descriptor_id, window_bounds
from services.ratelimit.storage import BackendUnavailable, LimitStore, RestoredCounter

log = logging.getLogger(__name__)


class LedgerUsage(NamedTuple):
    """What one (tenant, key, model, credential) used since a time, as the ledger says."""

    tenant_id: str
    key_id: str
    model: str
    requests: int
    tokens: int
    cost_micro_usd: int
    credential_id: str = ""
    """The tenant credential that served the events; empty for the provider's global one."""


class LedgerUnavailable(Exception):
    """The ledger could not be read."""


class Ledger(Protocol):
    """Where usage is summed from."""

    async def usage_since(self, start_s: int) -> list[LedgerUsage]:
        """Usage per (tenant, key, model, credential) of the events at or after ``start_s`` (epoch seconds).
        Raises :class:`LedgerUnavailable`."""
        ...


class MeteringLedger:
    """The metering service's ledger, over gRPC (``SumUsageByDescriptor``)."""

    def __init__(self, stub: metering_pb2_grpc.MeteringServiceAsyncStub, timeout_s: float = 10.0) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def usage_since(self, start_s: int) -> list[LedgerUsage]:
        """See :meth:`Ledger.usage_since`."""
        request = metering_pb2.SumUsageByDescriptorRequest(start_time=timestamp_pb2.Timestamp(seconds=start_s))
        try:
            response = await self._stub.SumUsageByDescriptor(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise LedgerUnavailable(f"metering: {exc.code().name}: {exc.details()}") from exc
        return [
            LedgerUsage(r.tenant_id, r.key_id, r.model, r.requests, r.tokens, r.cost_micro_usd, r.credential_id)
            for r in response.rows
        ]


def _descriptors(row: LedgerUsage) -> tuple[Descriptor, ...]:
    tenant = ("tenant", row.tenant_id)
    key = ("key", row.key_id)
    descriptors: tuple[Descriptor, ...] = ((tenant,), (tenant, key), (tenant, key, ("model", row.model)))
    if row.credential_id:
        # What services.ratelimit.credentials.credential_descriptor counts a credential's windows on;
        # spelled out here because that module imports the Limiter, which imports this one.
        descriptors += ((("credential", row.credential_id),),)
    return descriptors


def rebuilt_counters(
    by_window: Sequence[tuple[Window, int, int, Sequence[LedgerUsage]]],
) -> list[RestoredCounter]:
    """The counters of every descriptor the rows count against, per window and unit.

    ``by_window`` holds, per window, its start and end (epoch seconds) and the ledger's usage since
    that start. A row counts against its tenant, its key and its (key, model), as the router's
    descriptors do, and against the tenant credential that served it, if one did.
    """
    counters: list[RestoredCounter] = []
    for window, start_s, end_s, rows in by_window:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for row in rows:
            for descriptor in _descriptors(row):
                total = totals[descriptor_id(descriptor)]
                total[0] += row.requests
                total[1] += row.tokens
                total[2] += row.cost_micro_usd
        for ident, (requests, tokens, cost) in sorted(totals.items()):
            for unit, value in ((Unit.REQUESTS, requests), (Unit.TOKENS, tokens), (Unit.COST_MICRO_USD, cost)):
                if value > 0:
                    counters.append(RestoredCounter(ident, unit, window, start_s, end_s, value))
    return counters


class Rebuilder:
    """Rebuilds a store's counters from the ledger; one rebuild at a time per process."""

    def __init__(
        self,
        store: LimitStore,
        ledger: Ledger,
        *,
        grace_s: float = 2.0,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._grace_s = grace_s
        self._retry_s = retry_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """Whether a rebuild is running."""
        return self._task is not None and not self._task.done()

    def trigger(self) -> None:
        """Start a rebuild in the background unless one is running (Acquire refuses meanwhile)."""
        if not self.pending:
            self._task = asyncio.create_task(self._run(), name="ratelimit-rebuild")

    async def rebuild_now(self) -> None:
        """Rebuild before serving if the counters are lost, grace included, retrying until done;
        an Acquire meanwhile joins this rebuild rather than start another."""
        self.trigger()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Cancel a running rebuild."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        waited = False
        while True:
            try:
                if not await self._store.counters_lost():
                    return
                if not waited:
                    # Let requests in flight at the loss finish and their usage reach the ledger first.
                    await asyncio.sleep(self._grace_s)
                    waited = True
                    continue
                restored = await self._store.restore(await self._counters())
                log.warning("rate limit counters were lost; %s from the ledger", "rebuilt" if restored else "kept")
                return
            except (BackendUnavailable, LedgerUnavailable) as exc:
                log.warning("rebuilding rate limit counters failed, retrying: %s", exc)
            await asyncio.sleep(self._retry_s)

    async def _counters(self) -> list[RestoredCounter]:
        now_s = int(self._clock())
        windows: list[tuple[Window, int, int, Sequence[LedgerUsage]]] = []
        month_start, month_end = window_bounds(Window.MONTH, now_s)
        day_start, day_end = window_bounds(Window.DAY, now_s)
        windows.append((Window.MONTH, month_start, month_end, await self._ledger.usage_since(month_start)))
        windows.append((Window.DAY, day_start, day_end, await self._ledger.usage_since(day_start)))
        return rebuilt_counters(windows)
