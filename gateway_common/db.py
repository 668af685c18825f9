"""Database URLs: operators write the usual ``postgresql://`` or ``sqlite:///``; we need async drivers."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

from sqlalchemy.engine import make_url


def async_database_url(url: str) -> str:
    """The same database with its async driver (asyncpg, aiosqlite); a SQLite file's folder is created."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        raise ValueError(f"unsupported database {backend!r}: use postgresql:// or sqlite:///")
    return parsed.render_as_string(hide_password=False)


# Alembic keeps its migration context in module globals, so two migrations interleaving on one
# event loop (auth and metering started in one process, as tests do) corrupt each other. One lock
# per event loop serialises them; replicas in separate processes use a database lock as well.
_alembic_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def alembic_lock() -> asyncio.Lock:
    """The lock to hold around any Alembic command run on this event loop."""
    loop = asyncio.get_running_loop()
    lock = _alembic_locks.get(loop)
    if lock is None:
        lock = _alembic_locks[loop] = asyncio.Lock()
    return lock
