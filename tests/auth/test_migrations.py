"""The committed migrations build exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from gateway_common.db import async_database_url
from services.auth.storage.migrate import VERSION_TABLE, alembic_config, upgrade
from services.auth.storage.tables import AuthBase


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "version_table": VERSION_TABLE})
    return list(compare_metadata(context, AuthBase.metadata))


def _downgrade_to_base(connection: Connection) -> list[str]:
    command.downgrade(alembic_config(connection), "base")
    return inspect(connection).get_table_names()


async def test_migrations_match_the_models_and_go_both_ways(database_url: str) -> None:
    engine = create_async_engine(async_database_url(database_url))
    try:
        await upgrade(engine)
        await upgrade(engine)  # at head already: nothing to do, no error
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
        async with engine.begin() as conn:
            assert await conn.run_sync(_downgrade_to_base) == [VERSION_TABLE]
        await upgrade(engine)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: sorted(inspect(sync).get_table_names()))
        assert tables == [VERSION_TABLE, "auth_api_keys", "auth_credentials", "auth_routes", "auth_tenants"]
    finally:
        await engine.dispose()
