"""Alembic environment for the auth schema.

The service runs it at start with its own connection (``config.attributes["connection"]``). Run by
the ``alembic`` command (``alembic -c services/auth/alembic.ini revision --autogenerate -m ...``)
it connects to ``config.auth.database_url`` itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from gateway_common.config import load_config
from gateway_common.db import async_database_url
from services.auth.storage.migrate import VERSION_TABLE
from services.auth.storage.tables import AuthBase


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=AuthBase.metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_from_config() -> None:
    engine = create_async_engine(async_database_url(load_config().auth.database_url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the auth migrations run online only (the service runs them at start)")
_connection = context.config.attributes.get("connection")
if _connection is not None:
    _migrate(_connection)
else:
    asyncio.run(_migrate_from_config())
