"""The ledger's rules, without a server or a database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from gateway.metering.v1 import metering_pb2
from gateway_common.errors import FieldViolation
from services.metering.ledger import (
    MAX_PROMPT_LOG_FIELD_BYTES,
    Grouping,
    Outcome,
    PromptLog,
    QuarantinedEvent,
    RecordResult,
    UsageQuery,
    UsageRecord,
    UsageTotals,
    check_query,
    check_record,
    resolve_period,
    unique_by_event_id,
)
from services.metering.servicer import MeteringServicer

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

RECORD = UsageRecord(
    event_id="e1",
    request_id="r1",
    tenant_id="acme",
    key_id="k1",
    model="gpt-4o-mini",
    provider="openai",
    upstream_model="gpt-4o-mini",
    operation="chat",
    prompt_tokens=10,
    completion_tokens=5,
    cost_micro_usd=42,
    latency_ms=12.5,
    time_to_first_chunk_ms=None,
    outcome=Outcome.SUCCESS,
    error_code="",
    streamed=False,
    attempts=1,
    usage_estimated=False,
    time=NOW,
)


def test_a_complete_record_passes() -> None:
    assert check_record(0, RECORD) == []


def test_every_problem_of_a_record_is_named_with_its_wire_path() -> None:
    bad = replace(RECORD, event_id="", prompt_tokens=-1, latency_ms=-0.5, key_id="k\x00")

    assert [v.field for v in check_record(3, bad)] == [
        "events[3].event_id",
        "events[3].key_id",
        "events[3].prompt_tokens",
        "events[3].latency",
    ]


def test_a_prompt_log_field_may_hold_up_to_the_limit_in_utf8_bytes_and_no_nul() -> None:
    at_limit = "é" * (MAX_PROMPT_LOG_FIELD_BYTES // 2)  # two bytes each: exactly the limit
    over_limit = at_limit + "a"
    within = replace(RECORD, prompt_log=PromptLog(request_json=at_limit, response_text=""))
    bad = replace(RECORD, prompt_log=PromptLog(request_json=over_limit, response_text="a\x00"))

    assert check_record(0, within) == []
    assert [v.field for v in check_record(2, bad)] == [
        "events[2].prompt_log.request_json",
        "events[2].prompt_log.response_text",
    ]


def test_the_first_of_repeated_event_ids_is_kept_and_a_shared_request_id_is_no_repeat() -> None:
    first, repeat, other = RECORD, replace(RECORD, cost_micro_usd=999), replace(RECORD, event_id="e2")

    assert unique_by_event_id([first, repeat, other, repeat]) == [first, other]


def test_a_record_without_an_event_id_is_invalid_even_with_a_request_id() -> None:
    assert [v.field for v in check_record(0, replace(RECORD, event_id=""))] == ["events[0].event_id"]


def test_a_period_may_be_empty_but_not_reversed() -> None:
    assert check_query(UsageQuery(start=NOW, end=NOW)) == []
    assert check_query(UsageQuery(start=NOW, end=NOW - timedelta(seconds=1))) == [
        FieldViolation("start_time", "must not be after end_time")
    ]


def test_an_open_period_ends_now() -> None:
    query = UsageQuery(tenant_id="acme", start=NOW - timedelta(days=1), grouping=Grouping.MODEL)

    assert resolve_period(query, NOW) == replace(query, end=NOW)
    assert resolve_period(replace(query, end=NOW - timedelta(hours=1)), NOW).end == NOW - timedelta(hours=1)


class _FakeStore:
    """Keeps what it is given; answers queries with nothing."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self.quarantined: list[QuarantinedEvent] = []
        self.queries: list[UsageQuery] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def record(
        self, records: Sequence[UsageRecord], quarantined: Sequence[QuarantinedEvent] = ()
    ) -> RecordResult:
        self.records.extend(records)
        self.quarantined.extend(quarantined)
        return RecordResult(len(records), len(quarantined))

    async def query(self, query: UsageQuery) -> list[UsageTotals]:
        self.queries.append(query)
        return []


async def test_the_servicer_dates_undated_events_and_open_queries_by_its_clock() -> None:
    store = _FakeStore()
    servicer = MeteringServicer(store, clock=lambda: NOW)
    dated = metering_pb2.UsageEvent(event_id="dated", request_id="dated", outcome=metering_pb2.OUTCOME_CANCELLED)
    dated.time.FromDatetime(NOW - timedelta(minutes=5))
    dated.latency.FromMilliseconds(1500)
    undated = metering_pb2.UsageEvent(event_id="undated", request_id="undated")

    await servicer.RecordEvents(metering_pb2.RecordEventsRequest(events=[dated, undated]), context=None)  # type: ignore[arg-type]
    await servicer.QueryUsage(metering_pb2.QueryUsageRequest(group_by=metering_pb2.GROUP_BY_KEY), context=None)  # type: ignore[arg-type]

    assert [(r.request_id, r.time, r.outcome, r.latency_ms) for r in store.records] == [
        ("dated", NOW - timedelta(minutes=5), Outcome.CANCELLED, 1500.0),
        ("undated", NOW, Outcome.UNSPECIFIED, None),
    ]
    assert store.queries == [UsageQuery(start=None, end=NOW, grouping=Grouping.KEY)]


async def test_the_servicer_passes_a_prompt_log_only_when_the_event_has_one() -> None:
    store = _FakeStore()
    servicer = MeteringServicer(store, clock=lambda: NOW)
    logged = metering_pb2.UsageEvent(
        event_id="logged", request_id="logged", prompt_log=metering_pb2.PromptLog(request_json="{}", response_text="hi")
    )
    empty = metering_pb2.UsageEvent(event_id="empty", request_id="empty")
    empty.prompt_log.SetInParent()
    plain = metering_pb2.UsageEvent(event_id="plain", request_id="plain")

    await servicer.RecordEvents(metering_pb2.RecordEventsRequest(events=[logged, empty, plain]), context=None)  # type: ignore[arg-type]

    assert [(r.request_id, r.prompt_log) for r in store.records] == [
        ("logged", PromptLog("{}", "hi")),
        ("empty", PromptLog("", "")),
        ("plain", None),
    ]
