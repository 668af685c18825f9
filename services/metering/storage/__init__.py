"""Where the ledger is kept: backends behind :class:`LedgerStore`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.metering.ledger import UsageQuery, UsageRecord, UsageTotals


class LedgerStore(Protocol):
    """A usage ledger: one record per request id, summed on demand."""

    async def open(self) -> None:
        """Check the backend answers and bring its schema up to date."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def record(self, records: Sequence[UsageRecord]) -> int:
        """Append ``records`` and their prompt logs in one transaction, ignoring request ids already kept
        (a repeat's prompt log included); returns how many were new."""
        ...

    async def query(self, query: UsageQuery) -> list[UsageTotals]:
        """The totals over the selected rows, one per group, ordered by group."""
        ...
