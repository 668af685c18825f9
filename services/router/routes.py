"""This router's copy of the route overrides auth stores, refreshed every few seconds.

One ``GetRouteTable`` call per interval (``routing.override_refresh_s``), never one per request:
the planner reads :meth:`RouteTable.current`, which a refresh replaces whole, so a request never
sees half a table. A failed refresh keeps the last table (auth being briefly away must not
reroute traffic) and is retried at the next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

import grpc
from prometheus_client import Counter

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway_common.periodic import Periodic
from services.router.planner import RouteOverride

log = logging.getLogger(__name__)

REFRESHES_FAILED = Counter(
    "gateway_router_route_refreshes_failed_total",
    "GetRouteTable calls that failed (the router kept its previous route overrides).",
)

_EMPTY: Mapping[str, RouteOverride] = MappingProxyType({})


class RouteTable:
    """The route overrides as of the last successful refresh, and the task that refreshes them."""

    def __init__(self, stub: auth_pb2_grpc.AuthServiceAsyncStub, interval_s: float) -> None:
        self._stub = stub
        self._interval_s = interval_s
        self._table = _EMPTY
        self._loop = Periodic("route-refresh", self._interval_s, self.refresh)

    def current(self) -> Mapping[str, RouteOverride]:
        """The overrides now in force (read-only; replaced whole by each refresh)."""
        return self._table

    async def refresh(self) -> bool:
        """Fetch the whole table in one call; False (table kept) when auth did not answer."""
        try:
            response = await self._stub.GetRouteTable(
                auth_pb2.GetRouteTableRequest(), timeout=max(0.5, self._interval_s)
            )
        except grpc.aio.AioRpcError as exc:
            REFRESHES_FAILED.inc()
            log.warning(
                "refreshing route overrides failed: %s %s; keeping %d overrides, retrying in %.1fs",
                exc.code().name,
                exc.details(),
                len(self._table),
                self._interval_s,
            )
            return False
        self._table = MappingProxyType({r.model: RouteOverride(r.provider, r.upstream_model) for r in response.routes})
        return True

    async def start(self) -> None:
        """Load the table once (not fatal: the router serves prefixes and aliases meanwhile), then
        refresh it every interval (a failed refresh keeps the last table and is retried)."""
        await self.refresh()
        self._loop.start()

    async def stop(self) -> None:
        """Stop refreshing."""
        await self._loop.stop()
