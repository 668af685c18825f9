"""MeteringService over gRPC: protobuf in, ledger types to the store, protobuf out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway_common import identity
from gateway_common.db import unavailable_on_outage
from gateway_common.errors import FieldViolation, GatewayError, Reason, invalid_argument
from gateway_common.redaction import Redactor
from services.metering import metrics
from services.metering.descriptor_usage import DescriptorUsageServicer
from services.metering.ledger import (
    Grouping,
    Outcome,
    PromptLog,
    QuarantinedEvent,
    UsageQuery,
    UsageRecord,
    check_query,
    check_record,
    describe,
    resolve_period,
    unique_by_event_id,
)
from services.metering.prompt_log import PromptLogServicer
from services.metering.storage import LedgerStore, LedgerUnavailable
from services.metering.telemetry import TelemetryLog

_OUTCOMES: dict[int, Outcome] = {
    metering_pb2.OUTCOME_UNSPECIFIED: Outcome.UNSPECIFIED,
    metering_pb2.OUTCOME_SUCCESS: Outcome.SUCCESS,
    metering_pb2.OUTCOME_ERROR: Outcome.ERROR,
    metering_pb2.OUTCOME_CANCELLED: Outcome.CANCELLED,
    metering_pb2.OUTCOME_REJECTED: Outcome.REJECTED,
}

log = logging.getLogger(__name__)

_GROUPINGS: dict[int, Grouping] = {
    metering_pb2.GROUP_BY_UNSPECIFIED: Grouping.NONE,
    metering_pb2.GROUP_BY_TENANT: Grouping.TENANT,
    metering_pb2.GROUP_BY_KEY: Grouping.KEY,
    metering_pb2.GROUP_BY_MODEL: Grouping.MODEL,
    metering_pb2.GROUP_BY_PROVIDER: Grouping.PROVIDER,
    metering_pb2.GROUP_BY_CREDENTIAL: Grouping.CREDENTIAL,
}

# A batch of thousands of bad events would otherwise produce a status too large for gRPC trailers.
_MAX_REPORTED_VIOLATIONS = 20


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MeteringServicer(DescriptorUsageServicer, PromptLogServicer, metering_pb2_grpc.MeteringServiceServicer):
    """Records usage events and sums them; every decision is in :mod:`services.metering.ledger`."""

    def __init__(
        self,
        store: LedgerStore,
        clock: Callable[[], datetime] = _utc_now,
        telemetry: TelemetryLog | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._telemetry = telemetry
        # Prompt logs are redacted here too, before the database: a router may run with fewer patterns.
        self._redact = redact or Redactor()

    async def RecordEvents(
        self,
        request: metering_pb2.RecordEventsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> metering_pb2.RecordEventsResponse:
        """Record the valid events and quarantine the others; one bad event never costs the batch.

        Duplicates are not counted. An error here means the ledger could not be written at all
        (the database is down), and the caller keeps the batch to send it again.
        """
        now = self._clock()
        records: list[UsageRecord] = []
        quarantined: list[QuarantinedEvent] = []
        for index, event in enumerate(request.events):
            record, problems = _to_record(index, event, now, self._redact)
            if record is not None:
                problems.extend(check_record(index, record))
            if problems:
                quarantined.append(QuarantinedEvent(event.event_id, event.SerializeToString(), describe(problems)))
            elif record is not None:
                records.append(record)
        unique = unique_by_event_id(records)
        try:
            result = await self._store.record(unique, quarantined)
        except LedgerUnavailable as exc:
            # Retryable, and said so: the router keeps the batch and sends it again.
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE, Reason.DEPENDENCY_UNAVAILABLE, str(exc), {"retryable": "true"}
            ) from exc
        if self._telemetry is not None:
            # Only events new to the ledger: a redelivered batch adds no lines.
            await self._telemetry.append([r for r in unique if r.event_id in result.new_event_ids])
        if quarantined:
            metrics.QUARANTINED.labels("invalid").inc(len(quarantined))
        if result.quarantined > len(quarantined):
            metrics.QUARANTINED.labels("refused").inc(result.quarantined - len(quarantined))
        if result.quarantined:
            log.warning(
                "%d of %d usage events quarantined",
                result.quarantined,
                len(request.events),
                extra={"reasons": [q.reason for q in quarantined[:5]]},
            )
        return metering_pb2.RecordEventsResponse(recorded=result.recorded, quarantined=result.quarantined)

    async def QueryUsage(
        self,
        request: metering_pb2.QueryUsageRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> metering_pb2.QueryUsageResponse:
        """Sum the ledger over ``[start_time, end_time)`` for the tenant/key given, grouped as asked.

        A query naming no tenant reads every tenant's usage: only identities allowed cross-tenant
        reads may send one (the check lives here, with the data, not only at the edge or router).
        """
        if not request.tenant_id and not identity.may_read_all_tenants():
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.CALLER_NOT_ALLOWED,
                f"service identity {identity.caller_var.get()!r} may read usage only for a named tenant: "
                "set tenant_id (cross-tenant reads: " + ", ".join(sorted(identity.CROSS_TENANT_READERS)) + ")",
                {"param": "tenant_id"},
            )
        violations: list[FieldViolation] = []
        grouping = _GROUPINGS.get(request.group_by)
        if grouping is None:
            violations.append(FieldViolation("group_by", f"unknown value {request.group_by}"))
        start = end = None
        if request.HasField("start_time"):
            start = _datetime(request.start_time, "start_time", violations)
        if request.HasField("end_time"):
            end = _datetime(request.end_time, "end_time", violations)
        query = UsageQuery(
            request.tenant_id, request.key_id, start, end, grouping or Grouping.NONE, request.credential_id
        )
        violations.extend(check_query(query))
        if violations:
            raise _invalid(violations)
        async with unavailable_on_outage("metering database"):
            totals = await self._store.query(resolve_period(query, self._clock()))
        return metering_pb2.QueryUsageResponse(
            rows=[
                metering_pb2.UsageRow(
                    group=row.group,
                    requests=row.requests,
                    prompt_tokens=row.prompt_tokens,
                    completion_tokens=row.completion_tokens,
                    cost_micro_usd=row.cost_micro_usd,
                    errors=row.errors,
                )
                for row in totals
            ]
        )


def _to_record(
    index: int, event: metering_pb2.UsageEvent, now: datetime, redact: Callable[[str], str]
) -> tuple[UsageRecord | None, list[FieldViolation]]:
    """The event as a ledger record, or what stops it from being one (wire-level problems only)."""
    where = f"events[{index}]"
    violations: list[FieldViolation] = []
    outcome = _OUTCOMES.get(event.outcome)
    if outcome is None:
        violations.append(FieldViolation(f"{where}.outcome", f"unknown value {event.outcome}"))
    # An event without a time is dated when it reaches the ledger rather than refused: the
    # router sends events after the fact, and losing usage is worse than a slightly late date.
    time = _datetime(event.time, f"{where}.time", violations) if event.HasField("time") else now
    if outcome is None or time is None:
        return None, violations
    record = UsageRecord(
        event_id=event.event_id,
        request_id=event.request_id,
        tenant_id=event.tenant_id,
        key_id=event.key_id,
        model=event.model,
        provider=event.provider,
        upstream_model=event.upstream_model,
        operation=event.operation,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        cost_micro_usd=event.cost_micro_usd,
        latency_ms=_milliseconds(event.latency) if event.HasField("latency") else None,
        time_to_first_chunk_ms=(
            _milliseconds(event.time_to_first_chunk) if event.HasField("time_to_first_chunk") else None
        ),
        outcome=outcome,
        error_code=event.error_code,
        streamed=event.streamed,
        attempts=event.attempts,
        usage_estimated=event.usage_estimated,
        continuations=event.continuations,
        continued_from=event.continued_from,
        credential_id=event.credential_id,
        time=time,
        prompt_log=(
            PromptLog(redact(event.prompt_log.request_json), redact(event.prompt_log.response_text))
            if event.HasField("prompt_log")
            else None
        ),
        source=event.SerializeToString(),
    )
    return record, violations


def _datetime(timestamp: timestamp_pb2.Timestamp, field_path: str, violations: list[FieldViolation]) -> datetime | None:
    try:
        return timestamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        violations.append(FieldViolation(field_path, "not a valid timestamp"))
        return None


def _milliseconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds * 1000 + duration.nanos / 1e6


def _invalid(violations: Sequence[FieldViolation]) -> GatewayError:
    first = violations[0]
    message = f"{first.field}: {first.description}"
    if len(violations) > 1:
        message += f" (and {len(violations) - 1} more)"
    error = invalid_argument(message, first.field)
    error.field_violations = list(violations[:_MAX_REPORTED_VIOLATIONS])
    return error
