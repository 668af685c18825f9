"""Ledger sums per (tenant, key, model, credential) since a time: what the rate limit service
rebuilds lost day and month counters from (the per-credential windows included). The ledger is
the source of truth for those windows; Redis only caches them.

A servicer mixin and the SQL behind it, kept apart from the rest of metering so the RPC reads whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metering.v1 import metering_pb2
from gateway_common.errors import invalid_argument


@dataclass(frozen=True, slots=True)
class DescriptorTotals:
    """What one (tenant, key, model, credential) used in a period."""

    tenant_id: str
    key_id: str
    model: str
    requests: int
    tokens: int
    cost_micro_usd: int
    credential_id: str = ""
    """The tenant credential that served the events; empty for the provider's global one."""


class DescriptorUsageStore(Protocol):
    """A ledger that can sum itself per (tenant, key, model)."""

    async def sum_by_descriptor(self, start: datetime, end: datetime | None) -> list[DescriptorTotals]:
        """Totals of the events in ``[start, end)``, one per (tenant, key, model, credential), in that order."""
        ...


async def sum_by_descriptor(
    engine: AsyncEngine, events: Table, start: datetime, end: datetime | None
) -> list[DescriptorTotals]:
    """Sum ``events`` rows in ``[start, end)`` per (tenant, key, model, credential), in SQL (one
    indexed scan by time)."""
    c = events.c
    statement = (
        select(
            c.tenant_id,
            c.key_id,
            c.model,
            c.credential_id,
            func.count().label("requests"),
            func.coalesce(func.sum(c.prompt_tokens + c.completion_tokens), 0).label("tokens"),
            func.coalesce(func.sum(c.cost_micro_usd), 0).label("cost_micro_usd"),
        )
        .where(c.time >= start)
        .group_by(c.tenant_id, c.key_id, c.model, c.credential_id)
        .order_by(c.tenant_id, c.key_id, c.model, c.credential_id)
    )
    if end is not None:
        statement = statement.where(c.time < end)
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    # PostgreSQL sums bigints as numeric (Decimal); the contract wants integers.
    return [
        DescriptorTotals(
            str(row["tenant_id"]),
            str(row["key_id"]),
            str(row["model"]),
            int(row["requests"]),
            int(row["tokens"]),
            int(row["cost_micro_usd"]),
            str(row["credential_id"]),
        )
        for row in rows
    ]


class DescriptorUsageServicer:
    """``SumUsageByDescriptor``, mixed into the metering servicer (which provides ``_store``)."""

    _store: Any

    async def SumUsageByDescriptor(
        self,
        request: metering_pb2.SumUsageByDescriptorRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> metering_pb2.SumUsageByDescriptorResponse:
        """Sum the ledger per (tenant, key, model, credential) over ``[start_time, end_time)``."""
        if not request.HasField("start_time"):
            raise invalid_argument("start_time is required", "start_time")
        try:
            start = request.start_time.ToDatetime(tzinfo=UTC)
            end = request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None
        except (ValueError, OverflowError):
            raise invalid_argument("not a valid timestamp", "start_time") from None
        store: DescriptorUsageStore = self._store
        totals = await store.sum_by_descriptor(start, end)
        return metering_pb2.SumUsageByDescriptorResponse(
            rows=[
                metering_pb2.DescriptorUsage(
                    tenant_id=t.tenant_id,
                    key_id=t.key_id,
                    model=t.model,
                    requests=t.requests,
                    tokens=t.tokens,
                    cost_micro_usd=t.cost_micro_usd,
                    credential_id=t.credential_id,
                )
                for t in totals
            ]
        )
