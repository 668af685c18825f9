"""A fresh PostgreSQL database per test module, so modules never see each other's rows."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url


async def create_postgres_database(server_url: str, prefix: str) -> str:
    """Create an empty database on the server at ``server_url``; returns its ``postgresql://`` URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(server_url)
    try:
        # Names cannot be bound parameters; this one is ours and made of [a-z0-9_].
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def ledger_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest, prefix: str) -> str:
    """A fresh ledger database for a test parametrized over ``backend``: a SQLite file under
    ``tmp_path``, or a new PostgreSQL database on the ``postgres_url`` fixture's server."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return await create_postgres_database(request.getfixturevalue("postgres_url"), prefix)
