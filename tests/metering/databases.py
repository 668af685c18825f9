"""A fresh PostgreSQL database per test module, so modules never see each other's rows."""

from __future__ import annotations

import uuid

import asyncpg
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
