"""Where the ledger is kept: backends behind :class:`LedgerStore`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.metering.ledger import QuarantinedEvent, RecordResult, UsageQuery, UsageRecord, UsageTotals


class LedgerUnavailable(Exception):
    """The backend cannot be reached or written right now; the same call may succeed later."""


class LedgerStore(Protocol):
    """A usage ledger: one record per event id, summed on demand, and a quarantine for what it refused."""

    async def open(self) -> None:
        """Check the backend answers and bring its schema up to date."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def record(
        self, records: Sequence[UsageRecord], quarantined: Sequence[QuarantinedEvent] = ()
    ) -> RecordResult:
        """Append ``records`` and their prompt logs, ignoring event ids already kept (a repeat's prompt
        log included), and keep ``quarantined`` aside; a record the backend itself refuses is
        quarantined too, never the reason to refuse the others. Returns what was written; raises
        :class:`LedgerUnavailable` when nothing could be written."""
        ...

    async def query(self, query: UsageQuery) -> list[UsageTotals]:
        """The totals over the selected rows, one per group, ordered by group."""
        ...
