"""Stored responses in SQL, on the ledger's engine (same database, same migrations).

Every statement is async on the engine's driver (aiosqlite runs SQLite in its own thread, asyncpg
is non-blocking), so nothing blocks the event loop. Reads and deletes are one primary-key lookup
on (tenant_id, response_id): an id of another tenant costs exactly what an absent id costs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metering.response_store import StoredResponse
from services.metering.storage.sql import StoredResponseRow, dialect_insert

_responses = cast(Table, StoredResponseRow.__table__)  # type: ignore[attr-defined]
_KEY = (_responses.c.tenant_id, _responses.c.response_id)


def _is(tenant_id: str, response_id: str) -> Any:
    """The primary-key condition: the tenant is part of every lookup, never checked afterwards."""
    return (_responses.c.tenant_id == tenant_id) & (_responses.c.response_id == response_id)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were stored as UTC.
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class SqlResponseStore:
    """:class:`services.metering.response_store.ResponseStore` on an async SQLAlchemy engine.

    The engine (and its schema) belong to :class:`services.metering.storage.sql.SqlLedgerStore`,
    which opens, migrates and closes it; this store only uses it.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(self, stored: StoredResponse) -> None:
        """Insert, or replace every column of, the tenant's row of that id (the router may re-put)."""
        row: dict[str, Any] = {
            "tenant_id": stored.tenant_id,
            "response_id": stored.response_id,
            "key_id": stored.key_id,
            "previous_response_id": stored.previous_response_id,
            "created_at": _utc(stored.created_at),
            "response": stored.response,
            "input_items": stored.input_items,
        }
        async with self._engine.begin() as connection:
            statement = dialect_insert(connection)(_responses).values(row)
            replaced = {name: statement.excluded[name] for name in row if name not in ("tenant_id", "response_id")}
            await connection.execute(statement.on_conflict_do_update(index_elements=list(_KEY), set_=replaced))

    async def get(self, tenant_id: str, response_id: str) -> StoredResponse | None:
        """The tenant's row of that id, or None."""
        statement = select(_responses).where(_is(tenant_id, response_id))
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement)).mappings().first()
        if row is None:
            return None
        return StoredResponse(
            tenant_id=str(row["tenant_id"]),
            response_id=str(row["response_id"]),
            key_id=str(row["key_id"]),
            previous_response_id=str(row["previous_response_id"]),
            created_at=_utc(row["created_at"]),
            response=bytes(row["response"]),
            input_items=bytes(row["input_items"]),
        )

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        """Delete the tenant's row of that id; whether there was one."""
        statement = delete(_responses).where(_is(tenant_id, response_id)).returning(_responses.c.response_id)
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).first() is not None

    async def purge_created_before(self, cutoff: datetime, batch: int) -> int:
        """Delete up to ``batch`` rows created before ``cutoff`` (oldest first), in one short transaction."""
        oldest = (
            select(*_KEY).where(_responses.c.created_at < _utc(cutoff)).order_by(_responses.c.created_at).limit(batch)
        )
        # A row-value IN (SELECT … LIMIT) is the one bounded DELETE both SQLite and PostgreSQL run
        # (neither accepts DELETE … LIMIT in its default build).
        statement = delete(_responses).where(tuple_(*_KEY).in_(oldest)).returning(_responses.c.response_id)
        async with self._engine.begin() as connection:
            return len((await connection.execute(statement)).all())
