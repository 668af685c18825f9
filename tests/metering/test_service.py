"""The metering service over real gRPC, against SQLite and a real PostgreSQL: the same suite for both."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import RowMapping, select

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway_common.config import GatewayConfig, MeteringConfig
from gateway_common.errors import GatewayError
from services.metering.ledger import MAX_PROMPT_LOG_FIELD_BYTES
from services.metering.server import build
from services.metering.storage.sql import PromptLogRow, QuarantinedEventRow, UsageEventRow, create_engine
from tests.metering.databases import create_postgres_database


@dataclass
class Metering:
    """A running metering service, a stub on it, and the database URL behind it."""

    stub: metering_pb2_grpc.MeteringServiceAsyncStub
    channel: grpc.aio.Channel
    database_url: str

    async def record(self, *events: metering_pb2.UsageEvent) -> int:
        response = await self.stub.RecordEvents(metering_pb2.RecordEventsRequest(events=events))
        return response.recorded

    async def send(self, *events: metering_pb2.UsageEvent) -> tuple[int, int]:
        """Recorded and quarantined counts of one batch."""
        response = await self.stub.RecordEvents(metering_pb2.RecordEventsRequest(events=events))
        return response.recorded, response.quarantined

    async def quarantined(self, *event_ids: str) -> dict[str, RowMapping]:
        """The quarantine rows of ``event_ids``, by event id."""
        engine = create_engine(self.database_url)
        try:
            async with engine.connect() as connection:
                table = QuarantinedEventRow.__table__  # type: ignore[attr-defined]
                result = await connection.execute(select(table).where(table.c.event_id.in_(event_ids)))
                return {row["event_id"]: row for row in result.mappings().all()}
        finally:
            await engine.dispose()

    async def query(self, **fields: Any) -> list[metering_pb2.UsageRow]:
        response = await self.stub.QueryUsage(metering_pb2.QueryUsageRequest(**fields))
        return list(response.rows)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def metering(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Metering]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('metering')}/ledger.db"
    else:
        url = await create_postgres_database(request.getfixturevalue("postgres_url"), "metering_service")
    app = build(GatewayConfig(metering=MeteringConfig(database_url=url)), listen="127.0.0.1:0")
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Metering(metering_pb2_grpc.MeteringServiceStub(channel), channel, url)
    finally:
        await channel.close()
        await app.stop(0)


_windows = itertools.count()


@dataclass
class Scope:
    """Names and a time window no other test uses, so tests share one database without interfering."""

    prefix: str
    start: datetime
    end: datetime

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def at(self, minutes: int) -> datetime:
        return self.start + timedelta(minutes=minutes)


@pytest.fixture
def scope() -> Iterator[Scope]:
    start = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(days=next(_windows))
    yield Scope(uuid.uuid4().hex[:8], start, start + timedelta(days=1))


def event(
    scope: Scope,
    request_id: str,
    *,
    tenant: str = "acme",
    key: str = "k1",
    model: str = "gpt-4o-mini",
    provider: str = "openai",
    prompt: int = 10,
    completion: int = 5,
    cost: int = 100,
    outcome: int = metering_pb2.OUTCOME_SUCCESS,
    minutes: int = 0,
) -> metering_pb2.UsageEvent:
    """An event of ``scope`` (event id = request id, tenant and key prefixed with the scope's own prefix)."""
    message = metering_pb2.UsageEvent(
        event_id=scope.name(request_id),
        request_id=scope.name(request_id),
        tenant_id=scope.name(tenant),
        key_id=scope.name(key),
        model=model,
        provider=provider,
        upstream_model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_micro_usd=cost,
        outcome=outcome,
        operation="chat",
        attempts=1,
    )
    message.time.FromDatetime(scope.at(minutes))
    return message


def _period(scope: Scope) -> dict[str, Any]:
    start, end = metering_pb2.QueryUsageRequest().start_time, metering_pb2.QueryUsageRequest().end_time
    start.FromDatetime(scope.start)
    end.FromDatetime(scope.end)
    return {"start_time": start, "end_time": end}


def _totals(row: metering_pb2.UsageRow) -> tuple[str, int, int, int, int, int]:
    return (row.group, row.requests, row.prompt_tokens, row.completion_tokens, row.cost_micro_usd, row.errors)


async def _prompt_logs(metering: Metering, *request_ids: str) -> dict[str, RowMapping]:
    """The stored prompt logs of ``request_ids``, by request id (absent ones are missing)."""
    engine = create_engine(metering.database_url)
    try:
        async with engine.connect() as connection:
            table = PromptLogRow.__table__  # type: ignore[attr-defined]
            result = await connection.execute(select(table).where(table.c.request_id.in_(request_ids)))
            return {row["request_id"]: row for row in result.mappings().all()}
    finally:
        await engine.dispose()


def _logged(message: metering_pb2.UsageEvent, request_json: str, response_text: str) -> metering_pb2.UsageEvent:
    message.prompt_log.request_json = request_json
    message.prompt_log.response_text = response_text
    return message


async def _error(call: Any) -> GatewayError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return GatewayError.from_rpc_error(caught.value)


async def test_reports_serving_once_migrated(metering: Metering) -> None:
    health = health_pb2_grpc.HealthStub(metering.channel)
    for service in ("", "gateway.metering.v1.MeteringService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_keeps_every_field_of_an_event(metering: Metering, scope: Scope) -> None:
    sent = event(scope, "r1", prompt=123, completion=45, cost=9_000_000_000, outcome=metering_pb2.OUTCOME_ERROR)
    sent.error_code = "RESOURCE_EXHAUSTED"
    sent.streamed = True
    sent.attempts = 3
    sent.usage_estimated = True
    sent.continuations = 1
    sent.continued_from = "openai:gpt-4o@312"
    sent.credential_id = "cred_abc"
    sent.upstream_model = "gpt-4o-mini-2024-07-18"
    sent.operation = "embeddings"
    sent.latency.FromMilliseconds(1500)
    sent.time_to_first_chunk.FromMicroseconds(250_500)
    sent.time.FromDatetime(scope.at(7) + timedelta(microseconds=123456))
    unary = event(scope, "r2")

    assert await metering.record(sent, unary) == 2

    engine = create_engine(metering.database_url)
    try:
        async with engine.connect() as connection:
            table = UsageEventRow.__table__
            result = await connection.execute(
                select(table)
                .where(table.c.request_id.in_([sent.request_id, unary.request_id]))
                .order_by(table.c.request_id)
            )
            rows = result.mappings().all()
    finally:
        await engine.dispose()
    stored, stored_unary = rows
    assert {k: stored[k] for k in stored if k not in ("time", "recorded_at")} == {
        "event_id": scope.name("r1"),
        "request_id": scope.name("r1"),
        "tenant_id": scope.name("acme"),
        "key_id": scope.name("k1"),
        "model": "gpt-4o-mini",
        "provider": "openai",
        "upstream_model": "gpt-4o-mini-2024-07-18",
        "operation": "embeddings",
        "prompt_tokens": 123,
        "completion_tokens": 45,
        "cost_micro_usd": 9_000_000_000,
        "latency_ms": 1500.0,
        "time_to_first_chunk_ms": 250.5,
        "outcome": "ERROR",
        "error_code": "RESOURCE_EXHAUSTED",
        "streamed": True,
        "attempts": 3,
        "usage_estimated": True,
        "continuations": 1,
        "continued_from": "openai:gpt-4o@312",
        "credential_id": "cred_abc",
    }
    # SQLite hands timestamps back without their zone; both are stored in UTC.
    assert stored["time"].replace(tzinfo=UTC) == scope.at(7) + timedelta(microseconds=123456)
    assert stored_unary["time_to_first_chunk_ms"] is None
    assert stored_unary["outcome"] == "SUCCESS"
    assert stored_unary["credential_id"] == ""


async def test_sums_a_tenant_and_counts_every_unsuccessful_outcome_as_an_error(
    metering: Metering, scope: Scope
) -> None:
    outcomes = [
        metering_pb2.OUTCOME_SUCCESS,
        metering_pb2.OUTCOME_ERROR,
        metering_pb2.OUTCOME_CANCELLED,
        metering_pb2.OUTCOME_REJECTED,
        metering_pb2.OUTCOME_SUCCESS,
    ]
    events = [event(scope, f"r{i}", prompt=i, completion=2 * i, cost=10 * i, outcome=o) for i, o in enumerate(outcomes)]
    assert await metering.record(*events) == 5
    assert await metering.record(event(scope, "other", tenant="other")) == 1

    rows = await metering.query(tenant_id=scope.name("acme"))

    assert [_totals(row) for row in rows] == [("", 5, 10, 20, 100, 3)]


async def test_ignores_an_event_it_already_has(metering: Metering, scope: Scope) -> None:
    first, second = event(scope, "r1", cost=100), event(scope, "r2", cost=200)
    assert await metering.record(first, second) == 2

    # A retried batch, and a batch repeating an id within itself, add nothing twice.
    assert await metering.record(first, second) == 0
    changed = event(scope, "r1", cost=999_999)
    assert await metering.record(changed, event(scope, "r3", cost=300), event(scope, "r3", cost=300)) == 1

    rows = await metering.query(tenant_id=scope.name("acme"))
    assert [_totals(row) for row in rows] == [("", 3, 30, 15, 600, 0)]


async def test_selects_by_key_and_half_open_period(metering: Metering, scope: Scope) -> None:
    await metering.record(
        event(scope, "before", minutes=-1),
        event(scope, "at-start", minutes=0, cost=1),
        event(scope, "inside", minutes=30, cost=2),
        event(scope, "other-key", minutes=30, cost=4, key="k2"),
        event(scope, "at-end", minutes=60, cost=8),
    )
    start, end = metering_pb2.QueryUsageRequest().start_time, metering_pb2.QueryUsageRequest().end_time
    start.FromDatetime(scope.at(0))
    end.FromDatetime(scope.at(60))
    tenant = scope.name("acme")

    in_period = await metering.query(tenant_id=tenant, start_time=start, end_time=end)
    for_key = await metering.query(tenant_id=tenant, key_id=scope.name("k1"), start_time=start, end_time=end)
    from_start = await metering.query(tenant_id=tenant, start_time=start)
    until_end = await metering.query(tenant_id=tenant, end_time=end)

    assert [row.cost_micro_usd for row in in_period] == [1 + 2 + 4]
    assert [row.cost_micro_usd for row in for_key] == [1 + 2]
    assert [row.cost_micro_usd for row in from_start] == [1 + 2 + 4 + 8]
    assert [row.cost_micro_usd for row in until_end] == [100 + 1 + 2 + 4]


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        (metering_pb2.GROUP_BY_UNSPECIFIED, [("", 4, 40, 20, 15, 1)]),
        (metering_pb2.GROUP_BY_TENANT, [("{p}-acme", 3, 30, 15, 7, 1), ("{p}-beta", 1, 10, 5, 8, 0)]),
        (
            metering_pb2.GROUP_BY_KEY,
            [("{p}-k1", 2, 20, 10, 3, 1), ("{p}-k2", 1, 10, 5, 4, 0), ("{p}-k3", 1, 10, 5, 8, 0)],
        ),
        (metering_pb2.GROUP_BY_MODEL, [("claude-3-5-haiku", 1, 10, 5, 8, 0), ("gpt-4o", 3, 30, 15, 7, 1)]),
        (
            metering_pb2.GROUP_BY_PROVIDER,
            [("anthropic", 1, 10, 5, 8, 0), ("azure", 1, 10, 5, 4, 0), ("openai", 2, 20, 10, 3, 1)],
        ),
    ],
)
async def test_groups_totals_in_group_order(
    metering: Metering, scope: Scope, group_by: int, expected: list[tuple[str, int, int, int, int, int]]
) -> None:
    await metering.record(
        event(scope, "r1", tenant="acme", key="k1", model="gpt-4o", provider="openai", cost=1),
        event(
            scope,
            "r2",
            tenant="acme",
            key="k1",
            model="gpt-4o",
            provider="openai",
            cost=2,
            outcome=metering_pb2.OUTCOME_ERROR,
        ),
        event(scope, "r3", tenant="acme", key="k2", model="gpt-4o", provider="azure", cost=4),
        event(scope, "r4", tenant="beta", key="k3", model="claude-3-5-haiku", provider="anthropic", cost=8),
    )

    rows = await metering.query(group_by=group_by, **_period(scope))

    assert [_totals(row) for row in rows] == [(group.format(p=scope.prefix), *sums) for group, *sums in expected]


async def test_groups_and_selects_by_the_tenant_credential_that_served(metering: Metering, scope: Scope) -> None:
    served = [
        event(scope, "r1", cost=1),
        event(scope, "r2", cost=2),
        event(scope, "r3", cost=4, outcome=metering_pb2.OUTCOME_ERROR),
        event(scope, "r4", cost=8),
    ]
    for message, credential in zip(served, ["", "cred_a", "cred_a", "cred_b"], strict=True):
        message.credential_id = credential
    await metering.record(*served)
    tenant = scope.name("acme")

    grouped = await metering.query(tenant_id=tenant, group_by=metering_pb2.GROUP_BY_CREDENTIAL, **_period(scope))
    one = await metering.query(tenant_id=tenant, credential_id="cred_a", **_period(scope))

    # The global credential's usage is the row with an empty group.
    assert [_totals(row) for row in grouped] == [
        ("", 1, 10, 5, 1, 0),
        ("cred_a", 2, 20, 10, 6, 1),
        ("cred_b", 1, 10, 5, 8, 0),
    ]
    assert [_totals(row) for row in one] == [("", 2, 20, 10, 6, 1)]


async def test_an_empty_selection_is_no_rows_grouped_or_not(metering: Metering, scope: Scope) -> None:
    # No usage is an empty list (Unified Model Gateway's clients read `rows` as such), not a row of zeros.
    nobody = scope.name("nobody")

    assert list(await metering.query(tenant_id=nobody)) == []
    assert await metering.query(tenant_id=nobody, group_by=metering_pb2.GROUP_BY_MODEL) == []


async def test_quarantines_an_event_without_an_event_id_and_records_the_rest(metering: Metering, scope: Scope) -> None:
    good = event(scope, "good")
    nameless = event(scope, "nameless")
    nameless.event_id = ""

    assert await metering.send(good, nameless) == (1, 1)

    # Never guessed from the client's request id, which is still there.
    stored = (await metering.quarantined(""))[""]
    assert metering_pb2.UsageEvent.FromString(stored["source"]) == nameless
    assert "events[1].event_id: must not be empty" in stored["reason"]
    assert [row.requests for row in await metering.query(tenant_id=scope.name("acme"))] == [1]


async def test_forty_good_events_and_one_with_nul_in_its_model_record_forty_and_quarantine_one(
    metering: Metering, scope: Scope
) -> None:
    good = [event(scope, f"x{i}", tenant="X") for i in range(40)]
    bad = event(scope, "nul", tenant="Y", model="mock:a\x00b")

    assert await metering.send(*good[:20], bad, *good[20:]) == (40, 1)

    assert [row.requests for row in await metering.query(tenant_id=scope.name("X"))] == [40]
    assert [row.requests for row in await metering.query(tenant_id=scope.name("Y"))] == []
    stored = (await metering.quarantined(bad.event_id))[bad.event_id]
    assert stored["reason"].startswith("events[20].model: must not contain NUL characters")
    assert metering_pb2.UsageEvent.FromString(stored["source"]).model == "mock:a\x00b"
    # The router re-sending the same batch (its acknowledgement was lost) changes nothing.
    assert await metering.send(*good, bad) == (0, 1)
    assert [row.requests for row in await metering.query(tenant_id=scope.name("X"))] == [40]
    assert len(await metering.quarantined(bad.event_id)) == 1


async def test_twenty_requests_sharing_a_client_request_id_are_twenty_rows_and_a_replay_is_one(
    metering: Metering, scope: Scope
) -> None:
    shared = [event(scope, "same") for _ in range(20)]
    for index, message in enumerate(shared):
        message.event_id = scope.name(f"event-{index}")

    assert await metering.record(*shared) == 20
    assert await metering.record(*shared, shared[0]) == 0

    assert [row.requests for row in await metering.query(tenant_id=scope.name("acme"))] == [20]


@pytest.mark.parametrize(
    ("field", "value", "violation"),
    [
        ("prompt_tokens", -1, "events[0].prompt_tokens"),
        ("completion_tokens", -1, "events[0].completion_tokens"),
        ("cost_micro_usd", -5, "events[0].cost_micro_usd"),
        ("attempts", -1, "events[0].attempts"),
        ("outcome", 99, "events[0].outcome"),
        ("model", "gpt\x00", "events[0].model"),
        ("event_id", "e\x00", "events[0].event_id"),
    ],
)
async def test_quarantines_a_bad_event_naming_the_field(
    metering: Metering, scope: Scope, field: str, value: Any, violation: str
) -> None:
    bad = event(scope, "bad")
    setattr(bad, field, value)

    assert await metering.send(bad) == (0, 1)

    stored = await metering.quarantined(bad.event_id.replace("\x00", "\ufffd"))
    assert [row["reason"].split(":")[0] for row in stored.values()] == [violation]


async def test_quarantines_a_negative_duration(metering: Metering, scope: Scope) -> None:
    bad = event(scope, "bad")
    bad.latency.FromMilliseconds(-3)

    assert await metering.send(bad) == (0, 1)

    assert (await metering.quarantined(bad.event_id))[bad.event_id]["reason"].startswith("events[0].latency:")


async def test_refuses_a_bad_query(metering: Metering, scope: Scope) -> None:
    period = _period(scope)
    backwards = {"start_time": period["end_time"], "end_time": period["start_time"]}

    unknown_grouping = await _error(metering.stub.QueryUsage(metering_pb2.QueryUsageRequest(group_by=42)))
    reversed_period = await _error(metering.stub.QueryUsage(metering_pb2.QueryUsageRequest(**backwards)))

    assert unknown_grouping.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in unknown_grouping.field_violations] == ["group_by"]
    assert reversed_period.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in reversed_period.field_violations] == ["start_time"]


async def test_counts_only_new_events_in_a_batch_larger_than_one_statement(metering: Metering, scope: Scope) -> None:
    # Large enough that the driver splits the insert into several statements (bound-parameter limits).
    events = [event(scope, f"r{i}", cost=1) for i in range(3000)]
    assert await metering.record(*events[:1000]) == 1000

    assert await metering.record(*events) == 2000
    assert [row.cost_micro_usd for row in await metering.query(tenant_id=scope.name("acme"))] == [3000]


async def test_keeps_the_prompt_log_of_a_logged_call_and_none_for_others(metering: Metering, scope: Scope) -> None:
    request_json = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Grüß dich 👋"}]}'
    logged = _logged(event(scope, "logged", key="k2"), request_json, "Hallo! 👋\nWie geht's?")
    # Set but empty (a call that failed before any answer) is still a logged call.
    empty = _logged(event(scope, "empty"), "", "")
    plain = event(scope, "plain")

    assert await metering.record(logged, empty, plain) == 3

    rows = await _prompt_logs(metering, logged.request_id, empty.request_id, plain.request_id)
    assert sorted(rows) == sorted([logged.request_id, empty.request_id])
    stored = rows[logged.request_id]
    assert {k: stored[k] for k in stored if k != "recorded_at"} == {
        "event_id": scope.name("logged"),
        "request_id": scope.name("logged"),
        "tenant_id": scope.name("acme"),
        "key_id": scope.name("k2"),
        "request_json": request_json,
        "response_text": "Hallo! 👋\nWie geht's?",
    }
    assert stored["recorded_at"] is not None
    assert (rows[empty.request_id]["request_json"], rows[empty.request_id]["response_text"]) == ("", "")


async def test_keeps_a_prompt_log_of_exactly_the_size_limit(metering: Metering, scope: Scope) -> None:
    # Four-byte characters: the limit counts UTF-8 bytes, not characters.
    text = "😀" * (MAX_PROMPT_LOG_FIELD_BYTES // 4)

    assert await metering.record(_logged(event(scope, "big"), text, text)) == 1

    stored = (await _prompt_logs(metering, scope.name("big")))[scope.name("big")]
    assert stored["request_json"] == text
    assert stored["response_text"] == text


async def test_ignores_the_prompt_log_of_an_event_it_already_has(metering: Metering, scope: Scope) -> None:
    first = _logged(event(scope, "r1"), '{"n": 1}', "first")
    unlogged = event(scope, "r2")
    assert await metering.record(first, unlogged) == 2

    # A retried event, a repeat within a batch, and a repeat that now carries a log change nothing.
    assert await metering.record(_logged(event(scope, "r1"), '{"n": 2}', "second")) == 0
    assert await metering.record(_logged(event(scope, "r2"), '{"n": 3}', "late")) == 0
    assert (
        await metering.record(_logged(event(scope, "r3"), '{"n": 4}', "kept"), _logged(event(scope, "r3"), "{}", "x"))
        == 1
    )

    rows = await _prompt_logs(metering, scope.name("r1"), scope.name("r2"), scope.name("r3"))
    assert {request_id: row["response_text"] for request_id, row in rows.items()} == {
        scope.name("r1"): "first",
        scope.name("r3"): "kept",
    }


@pytest.mark.parametrize("field", ["request_json", "response_text"])
@pytest.mark.parametrize(
    "value",
    [pytest.param("a\x00b", id="nul"), pytest.param("x" * (MAX_PROMPT_LOG_FIELD_BYTES + 1), id="too-long")],
)
async def test_quarantines_an_event_with_a_bad_prompt_log_and_records_the_rest(
    metering: Metering, scope: Scope, field: str, value: str
) -> None:
    good = _logged(event(scope, "good"), "{}", "fine")
    bad = event(scope, "bad")
    setattr(bad.prompt_log, field, value)

    assert await metering.send(good, bad) == (1, 1)

    reason = (await metering.quarantined(bad.event_id))[bad.event_id]["reason"]
    assert reason.startswith(f"events[1].prompt_log.{field}:")
    assert [row.requests for row in await metering.query(tenant_id=scope.name("acme"))] == [1]
    assert sorted(await _prompt_logs(metering, good.request_id, bad.request_id)) == [good.request_id]
