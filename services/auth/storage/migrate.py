"""Schema migrations (Alembic), run by the service at start, safe when replicas start together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway_common.db import alembic_lock

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version_auth"
"""Our own version table: the metering service may migrate the same PostgreSQL database."""
STARTUP_LOCK_ID = int.from_bytes(b"gw-auth!", "big")
"""The PostgreSQL advisory lock that serialises start-up (migrations, bootstrap) across replicas."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the auth migrations; ``env.py`` migrates ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision, in one transaction (PostgreSQL's DDL is transactional)."""
    async with alembic_lock(), engine.begin() as conn:
        await conn.run_sync(_upgrade)


@asynccontextmanager
async def startup_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold a PostgreSQL advisory lock for the block, so two replicas never migrate or bootstrap at once.

    A second replica waits here, then finds the schema at head and the bootstrap keys present.
    The lock belongs to the session, so it is released even if this process dies. SQLite needs
    none: it is the embedded single-process default, and it locks the file for writers anyway.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": STARTUP_LOCK_ID})
        await conn.commit()
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": STARTUP_LOCK_ID})
            await conn.commit()
