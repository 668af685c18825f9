"""Schema migrations at start: idempotent, matching the models, on their own version table, safe when replicas race."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Connection, inspect, text

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway_common.config import GatewayConfig, MeteringConfig
from gateway_common.db import alembic_lock
from gateway_common.grpc_server import ServiceApp
from services.metering.ledger import Grouping, Outcome, PromptLog, UsageQuery, UsageRecord
from services.metering.response_store import StoredResponse
from services.metering.server import build
from services.metering.storage import sql
from services.metering.storage.responses import SqlResponseStore
from services.metering.storage.sql import (
    VERSION_TABLE,
    PromptLogRow,
    SqlLedgerStore,
    alembic_config,
    create_engine,
    metadata,
)
from tests.metering.databases import create_postgres_database, ledger_url

HEAD = "0006"


def _config(url: str) -> GatewayConfig:
    return GatewayConfig(metering=MeteringConfig(database_url=url))


async def _record_one(port: int, request_id: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = metering_pb2_grpc.MeteringServiceStub(channel)
        event = metering_pb2.UsageEvent(
            event_id=request_id, request_id=request_id, tenant_id="acme", outcome=metering_pb2.OUTCOME_SUCCESS
        )
        response = await stub.RecordEvents(metering_pb2.RecordEventsRequest(events=[event]))
        return response.recorded


async def _requests(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = metering_pb2_grpc.MeteringServiceStub(channel)
        response = await stub.QueryUsage(metering_pb2.QueryUsageRequest(tenant_id="acme"))
        return response.rows[0].requests


async def test_a_restart_on_an_existing_sqlite_ledger_keeps_it(tmp_path: Path) -> None:
    config = _config(f"sqlite:///{tmp_path}/ledger.db")
    first = build(config, listen="127.0.0.1:0")
    assert await _record_one(await first.start(), "r1") == 1
    await first.stop(0)

    second = build(config, listen="127.0.0.1:0")
    port = await second.start()
    try:
        assert await _requests(port) == 1
        assert await _record_one(port, "r1") == 0
    finally:
        await second.stop(0)


@pytest.mark.postgres
async def test_two_servers_migrating_one_fresh_postgres_database_both_come_up(postgres_url: str) -> None:
    url = await create_postgres_database(postgres_url, "metering_race")
    apps: list[ServiceApp] = [build(_config(url), listen="127.0.0.1:0") for _ in range(2)]
    try:
        started = await asyncio.gather(*(app.start() for app in apps), return_exceptions=True)
        assert not [result for result in started if isinstance(result, BaseException)], started
        ports = [port for port in started if isinstance(port, int)]
        for port in ports:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Both replicas write to, and read from, the one ledger.
        assert await _record_one(ports[0], "r1") == 1
        assert await _record_one(ports[1], "r1") == 0
        assert await _requests(ports[1]) == 1
    finally:
        for app in apps:
            await app.stop(0)
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetch("SELECT version_num FROM alembic_version_metering") == [(HEAD,)]
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_another_services_alembic_history_in_the_same_database_is_left_alone(postgres_url: str) -> None:
    url = await create_postgres_database(postgres_url, "metering_shared")
    connection = await asyncpg.connect(url)
    try:
        # What another service (auth) keeps with Alembic's default table name: a revision we do not know.
        await connection.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        await connection.execute("INSERT INTO alembic_version VALUES ('a1b2c3d4')")
        app = build(_config(url), listen="127.0.0.1:0")
        try:
            assert await _record_one(await app.start(), "r1") == 1
        finally:
            await app.stop(0)
        assert await connection.fetch("SELECT version_num FROM alembic_version") == [("a1b2c3d4",)]
    finally:
        await connection.close()


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


def _downgrade(revision: str) -> Callable[[Connection], list[str]]:
    def run(connection: Connection) -> list[str]:
        command.downgrade(alembic_config(connection), revision)
        return sorted(inspect(connection).get_table_names())

    return run


def _version(connection: Connection) -> list[str]:
    return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_migrations_match_the_models_and_go_both_ways_keeping_the_ledger(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = await ledger_url(backend, tmp_path, request, "metering_migrations")
    engine = create_engine(url)
    store = SqlLedgerStore(engine)
    record = UsageRecord(
        event_id="e1",
        request_id="r1",
        tenant_id="acme",
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
        prompt_log=PromptLog("{}", "hi"),
    )
    try:
        await store.open()
        await store.open()  # at head already: nothing to do, no error
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
        assert (await store.record([record])).recorded == 1

        # Back to the usage ledger alone (what a deployment before the prompt log has), then forward again.
        async with engine.begin() as connection:
            assert await connection.run_sync(_downgrade("0001")) == [VERSION_TABLE, "usage_events"]
        await store.open()
        async with engine.connect() as connection:
            assert await connection.run_sync(_version) == [HEAD]
            assert await connection.run_sync(_differences) == []
        assert [totals.requests for totals in await store.query(UsageQuery(tenant_id="acme"))] == [1]

        async with engine.begin() as connection:
            assert await connection.run_sync(_downgrade("base")) == [VERSION_TABLE]
    finally:
        await store.close()


def _upgrade_to(revision: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    return run


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_the_response_store_migration_keeps_a_0004_ledger_intact(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = await ledger_url(backend, tmp_path, request, "metering_0005")
    engine = create_engine(url)
    store = SqlLedgerStore(engine)
    records = [
        UsageRecord(
            event_id=f"e{i}",
            request_id=f"r{i}",
            tenant_id="acme",
            key_id="k1",
            model="m",
            provider="p",
            upstream_model="m",
            operation="chat",
            prompt_tokens=10 + i,
            completion_tokens=20 + i,
            cost_micro_usd=3_000_000_000_000 + i,
            latency_ms=1.5,
            time_to_first_chunk_ms=None,
            outcome=Outcome.SUCCESS,
            error_code="",
            streamed=True,
            attempts=2,
            usage_estimated=False,
            time=datetime(2001, 1, 1, tzinfo=UTC),
            prompt_log=PromptLog("{}", f"answer {i}"),
            continuations=1,
            continued_from="mock:m@3",
        )
        for i in range(3)
    ]
    try:
        # A deployment at 0004 with a ledger in it.
        async with alembic_lock(), engine.begin() as connection:
            await connection.run_sync(_upgrade_to("0004"))
            # Written as 0004's ledger had them: without the columns later revisions added.
            rows = [{k: v for k, v in sql._row(r, r.time).items() if k != "credential_id"} for r in records]
            old_events = sa.table("usage_events", *(sa.column(name) for name in rows[0]))
            await connection.execute(old_events.insert(), rows)
            await connection.execute(
                PromptLogRow.__table__.insert(),  # type: ignore[attr-defined]
                [sql._prompt_log_row(r, r.prompt_log, r.time) for r in records if r.prompt_log is not None],
            )
        async with engine.connect() as connection:
            before = {
                table: (await connection.execute(text(f"SELECT * FROM {table} ORDER BY event_id")))
                for table in ("usage_events", "prompt_logs")
            }
            # Later revisions add columns: the rows are compared on the columns 0004 had.
            columns = {table: ", ".join(result.keys()) for table, result in before.items()}
            before = {table: result.all() for table, result in before.items()}
            assert "stored_responses" not in await connection.run_sync(lambda c: inspect(c).get_table_names())

        await store.open()  # what a metering process does at start: up to 0005

        async with engine.connect() as connection:
            assert await connection.run_sync(_version) == [HEAD]
            assert await connection.run_sync(_differences) == []
            for table, rows in before.items():
                selected = text(f"SELECT {columns[table]} FROM {table} ORDER BY event_id")
                assert (await connection.execute(selected)).all() == rows
        assert [(t.requests, t.cost_micro_usd) for t in await store.query(UsageQuery(tenant_id="acme"))] == [
            (3, 9_000_000_000_003)
        ]
        # The new table works on the migrated schema, and going back to 0004 leaves the ledger too.
        responses = SqlResponseStore(engine)
        await responses.put(
            StoredResponse("acme", "resp_1", "k1", "", datetime(2001, 1, 1, tzinfo=UTC), b"\x00", b"[]")
        )
        assert (await responses.get("acme", "resp_1")) is not None
        async with alembic_lock(), engine.begin() as connection:
            tables = await connection.run_sync(_downgrade("0004"))
        assert "stored_responses" not in tables
        async with engine.connect() as connection:
            for table, rows in before.items():
                selected = text(f"SELECT {columns[table]} FROM {table} ORDER BY event_id")
                assert (await connection.execute(selected)).all() == rows
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_the_credential_migration_keeps_a_0005_ledger_and_dates_it_as_the_global_credentials(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = await ledger_url(backend, tmp_path, request, "metering_0006")
    engine = create_engine(url)
    store = SqlLedgerStore(engine)
    try:
        # A deployment at 0005 with a ledger in it, written as 0005 had it (no credential column).
        async with alembic_lock(), engine.begin() as connection:
            await connection.run_sync(_upgrade_to("0005"))
            await connection.execute(
                text(
                    "INSERT INTO usage_events (event_id, request_id, tenant_id, key_id, model, provider,"
                    " upstream_model, operation, prompt_tokens, completion_tokens, cost_micro_usd, outcome,"
                    " error_code, streamed, attempts, usage_estimated, continuations, continued_from, time,"
                    " recorded_at) VALUES ('old', 'r', 'acme', 'k1', 'm', 'p', 'm', 'chat', 1, 2, 3,"
                    " 'SUCCESS', '', false, 1, false, 0, '', :time, :time)"
                ),
                {"time": datetime(2001, 1, 1, tzinfo=UTC)},
            )

        await store.open()  # what a metering process does at start: up to 0006

        async with engine.connect() as connection:
            assert await connection.run_sync(_version) == [HEAD]
            assert await connection.run_sync(_differences) == []
            rows = (await connection.execute(text("SELECT event_id, credential_id FROM usage_events"))).all()
        assert [tuple(row) for row in rows] == [("old", "")]
        assert [
            (t.group, t.requests, t.prompt_tokens)
            for t in await store.query(UsageQuery(tenant_id="acme", grouping=Grouping.CREDENTIAL))
        ] == [("", 1, 1)]
        # Back to 0005: the column goes, the ledger stays.
        async with alembic_lock(), engine.begin() as connection:
            await connection.run_sync(_downgrade("0005"))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT event_id FROM usage_events"))).scalars().all() == ["old"]
    finally:
        await store.close()
