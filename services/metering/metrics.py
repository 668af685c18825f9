"""The metering service's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter

QUARANTINED = Counter(
    "gateway_metering_events_quarantined_total",
    "Usage events kept in the quarantine instead of the ledger, by why: invalid (the event broke a rule) "
    "or refused (the database would not store it).",
    ["cause"],
)
