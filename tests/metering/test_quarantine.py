"""What the database itself refuses is quarantined one event at a time, never the batch; and an
existing ledger keyed by request id is migrated to event ids."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from alembic import command
from sqlalchemy import select, text

from gateway.metering.v1 import metering_pb2
from gateway_common.config import GatewayConfig, MeteringConfig
from gateway_common.errors import GatewayError
from services.metering.ledger import Outcome, QuarantinedEvent, UsageQuery, UsageRecord
from services.metering.server import build
from services.metering.servicer import MeteringServicer
from services.metering.storage.sql import QuarantinedEventRow, SqlLedgerStore, alembic_config, create_engine
from tests.metering.databases import ledger_url
from tests.servers import free_port

RECORD = UsageRecord(
    event_id="",
    request_id="shared",
    tenant_id="X",
    key_id="k1",
    model="m",
    provider="p",
    upstream_model="m",
    operation="chat",
    prompt_tokens=1,
    completion_tokens=2,
    cost_micro_usd=3,
    latency_ms=None,
    time_to_first_chunk_ms=None,
    outcome=Outcome.SUCCESS,
    error_code="",
    streamed=False,
    attempts=1,
    usage_estimated=False,
    time=datetime(2001, 1, 1, tzinfo=UTC),
)


async def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return await ledger_url(backend, tmp_path, request, "metering_quarantine")


# The values each database refuses (past the servicer's checks, which a store must not rely on):
# PostgreSQL text cannot hold NUL; neither database binds an integer beyond 64 bits.
_REFUSED = [
    pytest.param("sqlite", {"prompt_tokens": 2**70}, id="sqlite-integer-overflow"),
    pytest.param("postgres", {"model": "mock:a\x00b"}, id="postgres-nul", marks=pytest.mark.postgres),
    pytest.param("postgres", {"cost_micro_usd": 2**70}, id="postgres-integer-overflow", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize(("backend", "bad_fields"), _REFUSED)
async def test_an_event_the_database_refuses_is_quarantined_and_the_rest_of_the_batch_recorded(
    backend: str, bad_fields: dict[str, object], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = SqlLedgerStore(create_engine(await _url(backend, tmp_path, request)))
    good = [replace(RECORD, event_id=f"x{i}", source=b"good-%d" % i) for i in range(40)]
    bad = replace(RECORD, event_id="bad", tenant_id="Y", source=b"bad-event", **bad_fields)  # type: ignore[arg-type]
    invalid = QuarantinedEvent("invalid", b"invalid-event", "events[41].event_id: must not be empty")
    try:
        await store.open()
        result = await store.record([*good[:20], bad, *good[20:]], [invalid])

        assert (result.recorded, result.quarantined) == (40, 2)
        assert [t.requests for t in await store.query(UsageQuery(tenant_id="X"))] == [40]
        assert [t.requests for t in await store.query(UsageQuery(tenant_id="Y"))] == []
        async with store._engine.connect() as connection:
            table = QuarantinedEventRow.__table__  # type: ignore[attr-defined]
            rows = (await connection.execute(select(table).order_by(table.c.event_id))).mappings().all()
        assert [(row["event_id"], row["source"]) for row in rows] == [
            ("bad", b"bad-event"),
            ("invalid", b"invalid-event"),
        ]
        assert rows[0]["reason"].startswith("database refused the event: ")
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_an_existing_ledger_keyed_by_request_id_gets_its_request_ids_as_event_ids(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = await _url(backend, tmp_path, request)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
            await connection.execute(
                text(
                    "INSERT INTO usage_events (request_id, tenant_id, key_id, model, provider, upstream_model,"
                    " operation, prompt_tokens, completion_tokens, cost_micro_usd, outcome, error_code, streamed,"
                    " attempts, usage_estimated, time, recorded_at) VALUES ('old-1', 'X', 'k', 'm', 'p', 'm',"
                    " 'chat', 1, 2, 3, 'SUCCESS', '', false, 1, false, :t, :t)"
                ),
                {"t": datetime(2001, 1, 1, tzinfo=UTC)},
            )
            await connection.execute(
                text(
                    "INSERT INTO prompt_logs (request_id, tenant_id, key_id, recorded_at, request_json,"
                    " response_text) VALUES ('old-1', 'X', 'k', :t, '{}', 'hi')"
                ),
                {"t": datetime(2001, 1, 1, tzinfo=UTC)},
            )
        app = build(GatewayConfig(metering=MeteringConfig(database_url=url)), listen="127.0.0.1:0")
        await app.start()  # migrates to head
        await app.stop(0)
        async with engine.connect() as connection:
            events = (await connection.execute(text("SELECT event_id, request_id FROM usage_events"))).all()
            logs = (await connection.execute(text("SELECT event_id, request_id, response_text FROM prompt_logs"))).all()
        assert [tuple(row) for row in events] == [("old-1", "old-1")]
        assert [tuple(row) for row in logs] == [("old-1", "old-1", "hi")]
        # The migrated row is now one event among others that share its request id.
        store = SqlLedgerStore(engine)
        result = await store.record([replace(RECORD, event_id="new-1", request_id="old-1")])
        assert result.recorded == 1
    finally:
        await engine.dispose()


async def test_a_ledger_database_that_cannot_be_reached_is_unavailable_not_internal() -> None:
    # Nothing listens on this port: the store cannot connect, as while PostgreSQL restarts.
    store = SqlLedgerStore(create_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/ledger"))
    servicer = MeteringServicer(store)
    event = metering_pb2.UsageEvent(event_id="e1", request_id="r1", tenant_id="X")
    try:
        with pytest.raises(GatewayError) as caught:
            await servicer.RecordEvents(metering_pb2.RecordEventsRequest(events=[event]), context=None)  # type: ignore[arg-type]
    finally:
        await store.close()

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.retryable
