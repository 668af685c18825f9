"""The append-only telemetry log: one JSON line per ledger event, at ``telemetry.log_file``.

Written here, where an event becomes a ledger record, rather than in the router: usage reaches
metering at least once, and only the ledger knows which delivery was the first, so a line per new
event id is a line per request. A line carries identifiers, counts, cost and timing — never a
prompt, an answer or a key. Appends run on one dedicated thread (file I/O would block the event
loop), in order, each line written whole with one ``write`` on a file opened for appending.

The line follows the ledger commit, so a metering process killed between the two loses that
line (the ledger keeps the event): the log is for watching, the ledger for billing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any

from services.metering.ledger import UsageRecord

log = logging.getLogger(__name__)


def telemetry_line(record: UsageRecord) -> dict[str, Any]:
    """The telemetry fields of one ledger record."""
    key_id = record.key_id
    return {
        "time": record.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "request_id": record.request_id,
        "event_id": record.event_id,
        "tenant": record.tenant_id,
        "key_id": key_id,
        # Anonymous callers are keyed "client:<id>"; their client id is what they sent.
        "client_id": key_id.removeprefix("client:") if key_id.startswith("client:") else None,
        "model": record.model,
        "provider": record.provider,
        "upstream_model": record.upstream_model,
        "operation": record.operation,
        "outcome": record.outcome.value.lower(),
        "error_code": record.error_code or None,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.prompt_tokens + record.completion_tokens,
        "cost_usd": record.cost_micro_usd / 1_000_000,
        "latency_ms": record.latency_ms,
        "streamed": record.streamed,
    }


class TelemetryLog:
    """Appends one line per record to a file, off the event loop."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        # One thread: lines from concurrent batches never interleave and keep their order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="telemetry")

    def _append(self, text: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as file:
            file.write(text)

    async def append(self, records: Sequence[UsageRecord]) -> None:
        """Append a line per record. A failure is logged, not raised: the events are in the ledger,
        and a redelivery would not bring the line back (the ledger skips it as a duplicate)."""
        if not records:
            return
        text = "".join(json.dumps(telemetry_line(r), ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._append, text)
        except OSError as exc:
            log.warning("cannot append %d lines to the telemetry log %s: %s", len(records), self._path, exc)

    async def aclose(self) -> None:
        """Finish pending appends and stop the thread."""
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
