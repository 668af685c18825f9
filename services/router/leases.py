"""Keeps the leases of this router's in-flight reservations alive, in one batched call per tick.

A reservation holds its concurrency slot only for its lease (``ratelimit.lease_s``); this process
renews the leases of every request it is still running every third of a lease, so a stream longer
than the lease keeps its slot, while the slots of a router that died come back within one lease.
One RenewLeases call per tick carries every in-flight reservation id of the process (split only past
the service's per-call maximum), so the cost does not grow with requests x ticks.

A reservation the service reports as not pending had lost its lease (the ratelimit service or its
backend was unreachable for longer than a lease): its slot may already serve another request. That
is logged and counted; the request carries on and settles as usual (the settlement then finds
nothing, so its estimate stands).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import grpc
from google.protobuf import duration_pb2
from prometheus_client import Counter

from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.periodic import Periodic

log = logging.getLogger(__name__)

# The ratelimit service's limit of reservation ids per RenewLeases call.
MAX_IDS_PER_CALL = 10_000

LEASES_LOST = Counter(
    "gateway_router_leases_lost_total",
    "In-flight reservations whose lease had expired when the router renewed it.",
)
RENEWALS_FAILED = Counter(
    "gateway_router_lease_renewals_failed_total",
    "RenewLeases calls that failed (the leases they carried were not extended).",
)


class Leases:
    """The reservation ids this process has in flight, and the task that renews their leases."""

    def __init__(
        self,
        stub: ratelimit_pb2_grpc.RateLimitServiceAsyncStub,
        lease_s: float,
    ) -> None:
        self._stub = stub
        self._lease_ms = max(1, round(lease_s * 1000))
        self._interval_s = lease_s / 3
        self._held: set[str] = set()
        self._loop = Periodic("lease-renewal", self._interval_s, self.renew)
        self._lost_callbacks: list[Callable[[Sequence[str]], None]] = []

    @property
    def lease(self) -> duration_pb2.Duration:
        """The lease to ask for at Acquire and at each renewal."""
        lease = duration_pb2.Duration()
        lease.FromMilliseconds(self._lease_ms)
        return lease

    def hold(self, reservation_id: str) -> None:
        """Renew ``reservation_id`` from now on, until :meth:`release`."""
        self._held.add(reservation_id)

    def release(self, reservation_id: str) -> None:
        """Stop renewing ``reservation_id`` (the request finished; its settlement frees the slot)."""
        self._held.discard(reservation_id)

    def on_lost(self, callback: Callable[[Sequence[str]], None]) -> None:
        """Call ``callback`` with the ids found lost at a renewal (quota blocks stop serving then)."""
        self._lost_callbacks.append(callback)

    def __len__(self) -> int:
        return len(self._held)

    def start(self) -> None:
        """Start renewing every third of a lease (a failed renewal is logged and retried next time:
        the loop must outlive any one failure, or every lease would lapse)."""
        self._loop.start()

    async def stop(self) -> None:
        """Stop renewing (on shutdown, after the in-flight calls ended)."""
        await self._loop.stop()

    async def renew(self) -> None:
        """Renew the leases of everything held now, in one call (or one per MAX_IDS_PER_CALL)."""
        held = list(self._held)
        for start in range(0, len(held), MAX_IDS_PER_CALL):
            batch = held[start : start + MAX_IDS_PER_CALL]
            try:
                response = await self._stub.RenewLeases(
                    ratelimit_pb2.RenewLeasesRequest(reservation_ids=batch, lease=self.lease),
                    timeout=max(0.1, self._interval_s),
                )
            except grpc.aio.AioRpcError as exc:
                RENEWALS_FAILED.inc()
                log.warning(
                    "renewing %d leases failed: %s %s; retrying in %.1fs",
                    len(batch),
                    exc.code().name,
                    exc.details(),
                    self._interval_s,
                )
                continue
            # Released meanwhile means settled meanwhile: not a lost lease.
            lost = [rid for rid in response.missing_reservation_ids if rid in self._held]
            if lost:
                LEASES_LOST.inc(len(lost))
                log.warning(
                    "%d in-flight reservations had lost their lease (their slots may be in use again): %s",
                    len(lost),
                    ", ".join(lost[:10]),
                )
                # A lapsed lease cannot be renewed; asking again every tick would only repeat this line.
                self._held.difference_update(lost)
                for callback in self._lost_callbacks:
                    callback(lost)
