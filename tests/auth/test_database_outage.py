"""The auth service while its PostgreSQL cannot be reached: UNAVAILABLE with RetryInfo (a 503 with
Retry-After at the edge), never INTERNAL, and healthy again as soon as the database answers.

The outage is a loopback TCP proxy in front of the session's real PostgreSQL that drops every
connection and refuses new ones, then listens again on the same port: to the service this is
exactly a database restart or a network cut, and the shared server stays up for other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from gateway.auth.v1 import auth_pb2
from gateway_common.db import is_outage, unavailable_on_outage
from gateway_common.errors import GatewayError, Reason
from services.auth.settings import AuthSecrets, BootstrapKey
from tests.auth.helpers import auth_config, bearer, gateway_error, running_auth

ADMIN = "gw-outage-admin-key-0123456789abcdef"
ACME = "sk-acme-outage-key-0001"
SECRETS = AuthSecrets(tenant_keys=(BootstrapKey("acme", ACME),), admin_key=ADMIN)


class CuttableProxy:
    """Forwards loopback TCP connections to ``target``; :meth:`cut` drops them all and refuses new ones."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen (again, on the same port once it has one)."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Close the listener and every forwarded connection."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._writers.difference_update((writer, upstream_writer))


@pytest.fixture
async def proxied_database(postgres_url: str) -> AsyncIterator[tuple[str, CuttableProxy]]:
    """A fresh database on the session's PostgreSQL, and its URL through a :class:`CuttableProxy`."""
    name = f"auth_outage_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = CuttableProxy(host, int(port))
    await proxy.start()
    base = postgres_url.rsplit("/", 1)[0].replace(host_port, f"127.0.0.1:{proxy.port}")
    try:
        yield f"{base}/{name}", proxy
    finally:
        with contextlib.suppress(RuntimeError):
            await proxy.cut()
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _refusal(call: object) -> GatewayError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return gateway_error(caught.value)


@pytest.mark.postgres
async def test_an_outage_is_unavailable_with_retry_info_and_heals_itself(
    proxied_database: tuple[str, CuttableProxy], tmp_path: Path
) -> None:
    url, proxy = proxied_database
    async with running_auth(auth_config(url, tmp_path), SECRETS) as auth:
        ok = await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=ACME))
        assert ok.principal.tenant_id == "acme"

        await proxy.cut()
        for call in (
            auth.stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=ACME)),
            auth.stub.ListTenants(auth_pb2.ListTenantsRequest(), metadata=bearer(ADMIN)),
        ):
            error = await _refusal(call)
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.DEPENDENCY_UNAVAILABLE), error
            assert error.retry_after_s is not None and error.retry_after_s >= 1
            assert error.message == "The auth database is unavailable; retry later."
            assert str(proxy.port) not in str(error.metadata)

        await proxy.start()
        # The same process, no restart: the pool drops its dead connections and opens new ones.
        ok = await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=ACME))
        assert ok.principal.tenant_id == "acme"
        tenants = await auth.stub.ListTenants(auth_pb2.ListTenantsRequest(), metadata=bearer(ADMIN))
        assert "acme" in [t.tenant_id for t in tenants.tenants]


def test_what_counts_as_an_outage() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    assert is_outage(refused)
    assert is_outage(TimeoutError())
    assert is_outage(OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    dropped = DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_outage(dropped)
    wrapped = RuntimeError("while reading")
    wrapped.__cause__ = refused
    assert is_outage(wrapped)
    assert not is_outage(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_outage(ValueError("a bug"))


async def test_only_outages_become_unavailable() -> None:
    with pytest.raises(GatewayError) as caught:
        async with unavailable_on_outage("auth database"):
            raise ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432)")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "10.0.0.7" not in caught.value.message and "5432" not in caught.value.message
    with pytest.raises(ValueError, match="a bug"):
        async with unavailable_on_outage("auth database"):
            raise ValueError("a bug")
