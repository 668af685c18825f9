"""The usage ledger's rules: what a valid event is, what a query selects, what counts as an error.

No protobuf and no I/O here: the servicer translates to these types, storage persists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from gateway_common.errors import FieldViolation


class Outcome(StrEnum):
    """How a request ended; stored by name (the proto enum name without its ``OUTCOME_`` prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


# Every outcome but this one counts as an error in the totals: a cancelled or rejected request did
# not deliver what was asked, and an unspecified one cannot be shown to have.
SUCCESSFUL_OUTCOME = Outcome.SUCCESS


class Grouping(StrEnum):
    """How totals are grouped; NONE gives one row over everything selected."""

    NONE = "none"
    TENANT = "tenant"
    KEY = "key"
    MODEL = "model"
    PROVIDER = "provider"


@dataclass(frozen=True)
class PromptLog:
    """What a logged call asked (the canonical request as JSON) and answered (the first choice's text)."""

    request_json: str
    response_text: str


MAX_PROMPT_LOG_FIELD_BYTES = 1024 * 1024
"""The most a prompt log field may hold, in UTF-8 bytes. Larger ones are refused, never cut short: a
truncated log would look like a complete record of the call."""


@dataclass(frozen=True)
class UsageRecord:
    """One request's usage, as the ledger keeps it."""

    request_id: str
    tenant_id: str
    key_id: str
    model: str
    provider: str
    upstream_model: str
    operation: str
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int
    latency_ms: float | None
    time_to_first_chunk_ms: float | None
    outcome: Outcome
    error_code: str
    streamed: bool
    attempts: int
    usage_estimated: bool
    time: datetime
    """When the request was received (timezone-aware, UTC)."""
    prompt_log: PromptLog | None = None
    """What the call asked and answered; only for calls the tenant's policy marks for logging."""


@dataclass(frozen=True)
class UsageQuery:
    """Which ledger rows to sum, and how to group them; times are timezone-aware UTC, ``[start, end)``."""

    tenant_id: str = ""
    key_id: str = ""
    start: datetime | None = None
    end: datetime | None = None
    grouping: Grouping = Grouping.NONE


@dataclass(frozen=True)
class UsageTotals:
    """One group's sums; ``group`` is empty without grouping."""

    group: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int
    errors: int


_TEXT_FIELDS = ("request_id", "tenant_id", "key_id", "model", "provider", "upstream_model", "operation", "error_code")
_COUNT_FIELDS = ("prompt_tokens", "completion_tokens", "cost_micro_usd", "attempts")
_DURATION_FIELDS = {"latency_ms": "latency", "time_to_first_chunk_ms": "time_to_first_chunk"}
_PROMPT_LOG_FIELDS = ("request_json", "response_text")


def check_record(index: int, record: UsageRecord) -> list[FieldViolation]:
    """What is wrong with the ``index``-th event of a batch (empty when it can be recorded).

    Field paths name the wire fields (``events[3].request_id``) because that is what the caller sent.
    """
    where = f"events[{index}]"
    violations: list[FieldViolation] = []
    if not record.request_id:
        violations.append(FieldViolation(f"{where}.request_id", "must not be empty"))
    for name in _TEXT_FIELDS:
        # PostgreSQL text cannot hold NUL; refusing it here keeps both backends alike.
        if "\x00" in getattr(record, name):
            violations.append(FieldViolation(f"{where}.{name}", "must not contain NUL characters"))
    for name in _COUNT_FIELDS:
        if getattr(record, name) < 0:
            violations.append(FieldViolation(f"{where}.{name}", "must not be negative"))
    for attribute, wire_name in _DURATION_FIELDS.items():
        value = getattr(record, attribute)
        if value is not None and value < 0:
            violations.append(FieldViolation(f"{where}.{wire_name}", "must not be negative"))
    if record.prompt_log is not None:
        violations.extend(_check_prompt_log(f"{where}.prompt_log", record.prompt_log))
    return violations


def _check_prompt_log(where: str, log: PromptLog) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for name in _PROMPT_LOG_FIELDS:
        value: str = getattr(log, name)
        if len(value.encode()) > MAX_PROMPT_LOG_FIELD_BYTES:
            violations.append(
                FieldViolation(f"{where}.{name}", f"must not be longer than {MAX_PROMPT_LOG_FIELD_BYTES} bytes")
            )
        elif "\x00" in value:
            violations.append(FieldViolation(f"{where}.{name}", "must not contain NUL characters"))
    return violations


def unique_by_request_id(records: Iterable[UsageRecord]) -> list[UsageRecord]:
    """The records with later repeats of a request id dropped: the first one sent is the one kept,
    exactly as if the repeats had arrived in a later batch."""
    seen: set[str] = set()
    kept: list[UsageRecord] = []
    for record in records:
        if record.request_id not in seen:
            seen.add(record.request_id)
            kept.append(record)
    return kept


def check_query(query: UsageQuery) -> list[FieldViolation]:
    """What is wrong with a query (empty when it can run)."""
    if query.start is not None and query.end is not None and query.start > query.end:
        return [FieldViolation("start_time", "must not be after end_time")]
    return []


def resolve_period(query: UsageQuery, now: datetime) -> UsageQuery:
    """The query with an unset end replaced by ``now``, as the contract says."""
    if query.end is not None:
        return query
    return replace(query, end=now)
