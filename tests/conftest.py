"""Fixtures shared by every test folder: real Redis and PostgreSQL, started once per run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import postgres_server, redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real redis-server on loopback, shared by the session; flush what you write."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL (postgresql://) of a real PostgreSQL server on loopback, shared by the session."""
    with postgres_server() as url:
        yield url
