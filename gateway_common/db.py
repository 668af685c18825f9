"""Database URLs: operators write the usual ``postgresql://`` or ``sqlite:///``; we need async drivers."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import grpc
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from gateway_common.errors import GatewayError, Reason

log = logging.getLogger(__name__)

# How long a caller is told to wait before retrying while its database is unreachable: a
# restart usually takes a few seconds, and the pool reconnects on the next call by itself.
OUTAGE_RETRY_AFTER_S = 2.0

# What a database that is down, restarting or unreachable raises through SQLAlchemy: asyncpg's
# refused connection surfaces as a bare OSError (not wrapped), a server shutting down or still
# starting as asyncpg's operator-intervention errors, a dropped connection as
# ConnectionDoesNotExistError, and a full pool or a slow connect as a timeout.
_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sa_exc.OperationalError,
    sa_exc.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)


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


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached right now (as opposed to a bug or bad data)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _OUTAGE_TYPES):
            return True
        if isinstance(current, sa_exc.DBAPIError):
            if current.connection_invalidated:
                return True
            orig = current.orig
            if isinstance(orig, BaseException) and is_outage(orig):
                return True
        current = current.__cause__
    return False


@asynccontextmanager
async def unavailable_on_outage(what: str) -> AsyncIterator[None]:
    """Turn a database outage raised inside the block into UNAVAILABLE (``DEPENDENCY_UNAVAILABLE``)
    with a Retry-After, so a caller gets a 503 it can retry instead of an internal error.

    ``what`` names the database in plain words ("auth database"); the driver's message, which
    carries addresses, goes to the log only. Anything that is not an outage passes through.
    """
    try:
        yield
    except GatewayError:
        raise
    except Exception as error:
        if not is_outage(error):
            raise
        log.warning("%s unavailable: %s: %s", what, type(error).__name__, error)
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.DEPENDENCY_UNAVAILABLE,
            f"The {what} is unavailable; retry later.",
            {"dependency": what.replace(" ", "_")},
            retry_after_s=OUTAGE_RETRY_AFTER_S,
        ) from None
