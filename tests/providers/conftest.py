"""The replay server, started once for the providers tests and reset for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.providers.replay import ReplayServer


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _replay_server() -> AsyncIterator[ReplayServer]:
    server = ReplayServer()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def replay(_replay_server: ReplayServer) -> ReplayServer:
    """The loopback replay server with no requests seen and no replies queued."""
    _replay_server.reset()
    return _replay_server
