"""The ledger in SQL: SQLite by default, PostgreSQL when ``DATABASE_URL`` says so.

Tables are sqlmodel models on their own metadata (the auth service may share the database). The
schema is owned by the Alembic scripts in ``services/metering/migrations``, applied in-process by
:meth:`SqlLedgerStore.open` with a version table of our own, so two services and any number of
replicas can migrate one PostgreSQL database side by side.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, Column, DateTime, Index, LargeBinary, Table, Text, case, event, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gateway_common.db import alembic_lock, async_database_url
from services.metering.descriptor_usage import DescriptorTotals, sum_by_descriptor
from services.metering.ledger import (
    SUCCESSFUL_OUTCOME,
    Grouping,
    PromptLog,
    QuarantinedEvent,
    RecordResult,
    UsageQuery,
    UsageRecord,
    UsageTotals,
)
from services.metering.prompt_log import PromptLogEntry, latest_prompt_logs
from services.metering.storage import LedgerUnavailable

VERSION_TABLE = "alembic_version_metering"
"""Alembic's version table for this service; another service in the same database keeps its own."""

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"

# A fixed key for pg_advisory_xact_lock, derived from a name so it cannot collide by accident
# with another service's lock on the same database.
_MIGRATION_LOCK_KEY = zlib.crc32(b"llm-gateway/metering/migrations")


class MeteringModel(SQLModel, registry=registry()):
    """Base of the metering tables: a metadata of their own, apart from other services' tables."""


class UsageEventRow(MeteringModel, table=True):
    """One request's usage; ``event_id`` (the router's, never the client's) is the key, so a re-sent
    event is a no-op while two requests that share a client request id are two rows."""

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_time", "time"),
        Index("ix_usage_events_tenant_id_time", "tenant_id", "time"),
        Index("ix_usage_events_key_id_time", "key_id", "time"),
        Index("ix_usage_events_request_id", "request_id"),
        Index("ix_usage_events_credential_id_time", "credential_id", "time"),
    )

    event_id: str = Field(primary_key=True)
    request_id: str
    """The client's request id, for correlation only."""
    tenant_id: str
    key_id: str
    model: str
    provider: str
    upstream_model: str
    operation: str
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int = Field(sa_column=Column(BigInteger, nullable=False))
    latency_ms: float | None = None
    time_to_first_chunk_ms: float | None = None
    outcome: str
    error_code: str
    streamed: bool
    attempts: int
    usage_estimated: bool
    continuations: int = 0
    """How many times a broken stream was continued by a later attempt."""
    continued_from: str = ""
    """Where each continuation started (``provider:model@characters``, "; "-separated)."""
    credential_id: str = ""
    """The tenant's own upstream credential that served the request; empty for the global one."""
    time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """When the request was received, UTC."""
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """When the ledger first stored the event, UTC."""


class PromptLogRow(MeteringModel, table=True):
    """What a logged call asked and answered, keyed like its usage event and written with it."""

    __tablename__ = "prompt_logs"

    event_id: str = Field(primary_key=True)
    """The event id of the usage event this log belongs to."""
    request_id: str
    """The client's request id, for correlation only."""
    tenant_id: str
    key_id: str
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """When the ledger stored the log (with its event), UTC."""
    request_json: str = Field(sa_column=Column(Text, nullable=False))
    response_text: str = Field(sa_column=Column(Text, nullable=False))


class QuarantinedEventRow(MeteringModel, table=True):
    """An event the ledger could not record (invalid, or refused by the database), kept as sent.

    ``digest`` (SHA-256 of the bytes) makes a re-sent bad event one row, as the ledger does for good ones.
    """

    __tablename__ = "quarantined_events"
    __table_args__ = (Index("ix_quarantined_events_quarantined_at", "quarantined_at"),)

    digest: str = Field(primary_key=True)
    """Hex SHA-256 of ``source``."""
    event_id: str
    """The event's id, empty when it had none."""
    reason: str = Field(sa_column=Column(Text, nullable=False))
    """Why the event was not recorded."""
    source: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    """The serialized ``UsageEvent`` exactly as received."""
    quarantined_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """When it was first quarantined, UTC."""


class StoredResponseRow(MeteringModel, table=True):
    """A Responses API response kept with ``store: true``, keyed by tenant first: every read and
    delete names the tenant, so another tenant's row is never even a candidate."""

    __tablename__ = "stored_responses"
    __table_args__ = (Index("ix_stored_responses_created_at", "created_at"),)

    tenant_id: str = Field(primary_key=True)
    response_id: str = Field(primary_key=True)
    key_id: str
    """The id of the key that created it."""
    previous_response_id: str
    """The response it continued, empty for the first of a conversation."""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """When the response was created, UTC; retention counts from here."""
    response: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    """The response as the router serialized it."""
    input_items: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    """The request's input items as the router serialized them."""


metadata = MeteringModel.metadata
_events = cast(Table, UsageEventRow.__table__)  # type: ignore[attr-defined]
_prompt_logs = cast(Table, PromptLogRow.__table__)  # type: ignore[attr-defined]
_quarantine = cast(Table, QuarantinedEventRow.__table__)  # type: ignore[attr-defined]

# SQLSTATE classes of errors caused by the values sent, not by the database's health: 22 (data
# exception, e.g. NUL in text, a number out of range) and 23 (integrity constraint violation).
_DATA_SQLSTATE_CLASSES = ("22", "23")


_VALUE_ERRORS = (StatementError, OverflowError, ValueError)


def refused_data(exc: Exception) -> bool:
    """Whether ``exc`` is the database (or its driver) refusing the values of a statement, as
    opposed to the database being unreachable or broken: only the former is worth quarantining
    for, since the same values will never be accepted."""
    if isinstance(exc, DataError | IntegrityError | OverflowError | ValueError):
        # OverflowError and ValueError: the driver could not bind a value (sqlite3 raises them raw
        # for an integer beyond 64 bits, for example), so no database would take it.
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in _DATA_SQLSTATE_CLASSES
    # A StatementError that is not a DBAPIError wraps a Python error raised while compiling or
    # binding values: the values are at fault.
    return isinstance(exc, StatementError)


_GROUP_COLUMNS: dict[Grouping, str] = {
    Grouping.TENANT: "tenant_id",
    Grouping.KEY: "key_id",
    Grouping.MODEL: "model",
    Grouping.PROVIDER: "provider",
    Grouping.CREDENTIAL: "credential_id",
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets queries read while a batch is written; busy_timeout makes a second writer wait
    # instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(database_url: str) -> AsyncEngine:
    """An async engine for ``database_url`` (``postgresql://…`` or ``sqlite:///…``); connects lazily."""
    engine = create_async_engine(async_database_url(database_url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(connection: Connection) -> Config:
    """The Alembic configuration that migrates this service's tables on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


class SqlLedgerStore:
    """The ledger in one SQL database, through an async SQLAlchemy engine."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = _utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def open(self) -> None:
        """Migrate the schema to the newest revision; succeeding proves the database answers."""
        async with alembic_lock(), self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together would race to create the same tables. The transaction-
                # scoped lock serialises them and cannot outlive the migration, even when the pooled
                # connection is reused. Later ones find the schema current and do nothing.
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            await connection.run_sync(_upgrade)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    async def record(
        self, records: Sequence[UsageRecord], quarantined: Sequence[QuarantinedEvent] = ()
    ) -> RecordResult:
        """Insert ``records`` (and their prompt logs) and ``quarantined`` in one transaction, skipping
        event ids already kept. When the database refuses a value, the batch is redone one record per
        savepoint so that only the records it refuses are quarantined. A database that cannot be
        reached (down, restarting) raises :class:`LedgerUnavailable`: nothing was written."""
        try:
            return await self._record(records, quarantined)
        except (DBAPIError, OSError) as exc:
            if isinstance(exc, DBAPIError) and refused_data(exc):
                raise
            raise LedgerUnavailable(f"the ledger database is unavailable: {str(exc).splitlines()[0]}") from exc

    async def _record(self, records: Sequence[UsageRecord], quarantined: Sequence[QuarantinedEvent]) -> RecordResult:
        recorded_at = self._clock()
        try:
            async with self._engine.begin() as connection:
                new = await _insert(connection, records, recorded_at)
                await _insert_quarantined(connection, quarantined, recorded_at)
            return RecordResult(recorded=len(new), quarantined=len(quarantined), new_event_ids=frozenset(new))
        except _VALUE_ERRORS as exc:
            if not refused_data(exc):
                raise
        async with self._engine.begin() as connection:
            kept: set[str] = set()
            refused: list[QuarantinedEvent] = []
            for record in records:
                try:
                    async with connection.begin_nested():
                        kept |= await _insert(connection, [record], recorded_at)
                except _VALUE_ERRORS as exc:
                    if not refused_data(exc):
                        raise
                    refused.append(QuarantinedEvent(record.event_id, record.source, _refusal(exc)))
            await _insert_quarantined(connection, [*quarantined, *refused], recorded_at)
        return RecordResult(
            recorded=len(kept), quarantined=len(quarantined) + len(refused), new_event_ids=frozenset(kept)
        )

    async def query(self, query: UsageQuery) -> list[UsageTotals]:
        """Sum the selected rows in SQL, one row per group, ordered by group."""
        errors = case((_events.c.outcome != SUCCESSFUL_OUTCOME.value, 1), else_=0)
        measures = (
            func.count().label("requests"),
            func.coalesce(func.sum(_events.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(_events.c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(_events.c.cost_micro_usd), 0).label("cost_micro_usd"),
            func.coalesce(func.sum(errors), 0).label("errors"),
        )
        column_name = _GROUP_COLUMNS.get(query.grouping)
        if column_name is None:
            statement = select(*measures)
        else:
            group = _events.c[column_name]
            statement = select(group.label("group"), *measures).group_by(group).order_by(group)
        if query.tenant_id:
            statement = statement.where(_events.c.tenant_id == query.tenant_id)
        if query.key_id:
            statement = statement.where(_events.c.key_id == query.key_id)
        if query.credential_id:
            statement = statement.where(_events.c.credential_id == query.credential_id)
        if query.start is not None:
            statement = statement.where(_events.c.time >= query.start)
        if query.end is not None:
            statement = statement.where(_events.c.time < query.end)
        async with self._engine.connect() as connection:
            result = await connection.execute(statement)
            rows = result.mappings().all()
        # PostgreSQL sums bigints as numeric (Decimal); the contract wants integers.
        return [
            UsageTotals(
                group=str(row["group"]) if column_name is not None else "",
                requests=int(row["requests"]),
                prompt_tokens=int(row["prompt_tokens"]),
                completion_tokens=int(row["completion_tokens"]),
                cost_micro_usd=int(row["cost_micro_usd"]),
                errors=int(row["errors"]),
            )
            for row in rows
            # An ungrouped sum over no events is one row of zeros in SQL; no usage is no rows.
            if column_name is not None or int(row["requests"])
        ]

    async def sum_by_descriptor(self, start: datetime, end: datetime | None) -> list[DescriptorTotals]:
        """See :class:`services.metering.descriptor_usage.DescriptorUsageStore`."""
        return await sum_by_descriptor(self._engine, _events, start, end)

    async def latest_prompt_logs(self, tenant_id: str, limit: int) -> list[PromptLogEntry]:
        """See :class:`services.metering.prompt_log.PromptLogStore`."""
        return await latest_prompt_logs(self._engine, _events, _prompt_logs, tenant_id, limit)


def dialect_insert(connection: AsyncConnection) -> Callable[..., Any]:
    """The ``insert`` of ``connection``'s dialect: both have ``on_conflict_do_nothing/update``."""
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


_MAX_PAGE = 64
"""Rows in one multi-row INSERT at most; see :func:`_pages`."""


def _pages(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """``rows`` in pages whose sizes are powers of two up to ``_MAX_PAGE`` (100 rows: 64, 32, 4).

    An INSERT … RETURNING of many rows is sent as one ``VALUES (…), (…)`` statement per page, a
    different SQL text for every row count, and each driver connection keeps every text it prepared
    (sqlite3's statement cache holds 128, asyncpg's 100): with batches of every size from 1 to a
    few hundred, that is tens of MB per connection, measured growing over 100k requests. Seven
    sizes keep seven statements."""
    start = 0
    while start < len(rows):
        left = len(rows) - start
        size = _MAX_PAGE if left >= _MAX_PAGE else 1 << (left.bit_length() - 1)
        yield rows[start : start + size]
        start += size


async def _insert(connection: AsyncConnection, records: Sequence[UsageRecord], recorded_at: datetime) -> set[str]:
    """Insert the records new to the ledger and their prompt logs; returns the event ids that were new."""
    if not records:
        return set()
    insert = dialect_insert(connection)
    statement = (
        insert(_events).on_conflict_do_nothing(index_elements=[_events.c.event_id]).returning(_events.c.event_id)
    )
    # RETURNING yields only the rows actually inserted, which counts new events exactly on
    # both backends (rowcount is unreliable for batched executes).
    rows = [_row(record, recorded_at) for record in records]
    new: set[str] = set()
    for page in _pages(rows):
        new.update((await connection.execute(statement, page)).scalars().all())
    # A repeat is ignored whole: a re-sent event that now carries a log must not attach it to
    # the event kept, so only the events just inserted contribute logs.
    logs = [
        _prompt_log_row(record, record.prompt_log, recorded_at)
        for record in records
        if record.prompt_log is not None and record.event_id in new
    ]
    if logs:
        await connection.execute(
            insert(_prompt_logs).on_conflict_do_nothing(index_elements=[_prompt_logs.c.event_id]), logs
        )
    return new


async def _insert_quarantined(
    connection: AsyncConnection, events: Sequence[QuarantinedEvent], quarantined_at: datetime
) -> None:
    if not events:
        return
    rows = [
        {
            "digest": hashlib.sha256(event.source).hexdigest(),
            # The id is kept for lookups; a NUL in it (one reason to be here) is not storable.
            "event_id": event.event_id.replace("\x00", "\ufffd"),
            "reason": event.reason.replace("\x00", "\ufffd"),
            "source": event.source,
            "quarantined_at": quarantined_at.astimezone(UTC),
        }
        for event in events
    ]
    insert = dialect_insert(connection)
    await connection.execute(insert(_quarantine).on_conflict_do_nothing(index_elements=[_quarantine.c.digest]), rows)


def _refusal(exc: Exception) -> str:
    # The driver's first line names the problem ("invalid byte sequence ... 0x00"); the rest
    # repeats the statement and its parameters, which the quarantine already holds as bytes.
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    lines = str(cause).splitlines() or [""]
    return f"database refused the event: {type(cause).__name__}: {lines[0]}"[:1000]


def _row(record: UsageRecord, recorded_at: datetime) -> dict[str, Any]:
    return {
        "event_id": record.event_id,
        "request_id": record.request_id,
        "tenant_id": record.tenant_id,
        "key_id": record.key_id,
        "model": record.model,
        "provider": record.provider,
        "upstream_model": record.upstream_model,
        "operation": record.operation,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost_micro_usd": record.cost_micro_usd,
        "latency_ms": record.latency_ms,
        "time_to_first_chunk_ms": record.time_to_first_chunk_ms,
        "outcome": record.outcome.value,
        "error_code": record.error_code,
        "streamed": record.streamed,
        "attempts": record.attempts,
        "usage_estimated": record.usage_estimated,
        "continuations": record.continuations,
        "continued_from": record.continued_from,
        "credential_id": record.credential_id,
        "time": record.time.astimezone(UTC),
        "recorded_at": recorded_at.astimezone(UTC),
    }


def _prompt_log_row(record: UsageRecord, log: PromptLog, recorded_at: datetime) -> dict[str, Any]:
    return {
        "event_id": record.event_id,
        "request_id": record.request_id,
        "tenant_id": record.tenant_id,
        "key_id": record.key_id,
        "recorded_at": recorded_at.astimezone(UTC),
        "request_json": log.request_json,
        "response_text": log.response_text,
    }
