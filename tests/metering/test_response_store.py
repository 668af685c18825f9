"""The response store over real gRPC on mutual TLS, against SQLite and a real PostgreSQL.

The metering service is started in-process with a throwaway CA, exactly as a deployment serves it:
the router's certificate is let in, any other service's is refused before the servicer runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_status import rpc_status

from gateway.metering.v1 import response_store_pb2 as pb
from gateway.metering.v1 import response_store_pb2_grpc as pb_grpc
from gateway_common.config import ConfigError, GatewayConfig, MeteringConfig, TlsConfig, load_config
from gateway_common.grpc_server import ServerSecurity, ServiceApp
from gateway_common.tls import channel_credentials, load_material, write_local_ca
from services.metering.response_store import MAX_ID_BYTES, NOT_FOUND_REASON, purge_expired
from services.metering.server import build
from services.metering.storage.responses import SqlResponseStore
from services.metering.storage.sql import create_engine
from tests.metering.databases import create_postgres_database

MAX_BYTES = 64 * 1024
"""The payload cap the service under test runs with."""

# Bytes no text column would keep: NUL, invalid UTF-8, every byte value.
BINARY = b"\x00\xff\xfe" + bytes(range(256))


@dataclass
class Store:
    """A running metering service, the mTLS folder it trusts, and its database."""

    port: int
    tls_dir: Path
    database_url: str

    def channel(self, identity: str) -> grpc.aio.Channel:
        """A channel showing ``identity``'s certificate."""
        material = load_material(TlsConfig(dir=str(self.tls_dir)), identity)
        assert material is not None
        return grpc.aio.secure_channel(f"127.0.0.1:{self.port}", channel_credentials(material))


async def _start(url: str, tls_dir: Path, **metering: object) -> tuple[ServiceApp, int]:
    app = build(GatewayConfig(metering=MeteringConfig(database_url=url, **metering)), listen="127.0.0.1:0")
    material = load_material(TlsConfig(dir=str(tls_dir)), "metering")
    assert material is not None
    return app, await app.start(ServerSecurity(material, verify_callers=True))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('responses')}/metering.db"
    else:
        url = await create_postgres_database(request.getfixturevalue("postgres_url"), "metering_responses")
    tls_dir = tmp_path_factory.mktemp("responses-tls")
    write_local_ca(tls_dir, ("metering", "router", "edge", "ratelimit"))
    app, port = await _start(url, tls_dir, response_max_bytes=MAX_BYTES)
    try:
        yield Store(port, tls_dir, url)
    finally:
        await app.stop(0)


@pytest.fixture
async def router(store: Store) -> AsyncIterator[pb_grpc.ResponseStoreServiceAsyncStub]:
    async with store.channel("router") as channel:
        yield pb_grpc.ResponseStoreServiceStub(channel)


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses, so tests share one database without seeing each other's rows."""
    return f"t-{uuid.uuid4().hex[:8]}"


def _at(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def stored(
    tenant: str,
    response_id: str = "resp_1",
    *,
    response: bytes = b'{"id":"resp_1"}',
    input_items: bytes = b"[]",
    created_at: datetime | None = None,
    **fields: str,
) -> pb.StoredResponse:
    return pb.StoredResponse(
        tenant_id=tenant,
        response_id=response_id,
        key_id=fields.pop("key_id", "key-1"),
        response=response,
        input_items=input_items,
        created_at=_at(created_at or datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        **fields,
    )


async def _error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error ``call`` fails with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _details(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None, bytes]:
    """Everything a caller learns from an error: code, message and the packed rich status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    return error.code(), error.details(), status.SerializeToString()


async def test_a_stored_response_reads_back_byte_for_byte(
    router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str
) -> None:
    sent = stored(tenant, response=BINARY, input_items=BINARY[::-1], previous_response_id="resp_0", key_id="key-7")
    await router.PutResponse(pb.PutResponseRequest(stored=sent))
    got = await router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_1"))
    assert got.stored == sent


async def test_a_put_of_an_existing_id_replaces_it(router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str) -> None:
    await router.PutResponse(pb.PutResponseRequest(stored=stored(tenant, response=b"first", previous_response_id="a")))
    second = stored(tenant, response=b"second", input_items=b"[1]", key_id="key-2")
    await router.PutResponse(pb.PutResponseRequest(stored=second))
    got = await router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_1"))
    # Every column is replaced, previous_response_id (now empty) included.
    assert got.stored == second


async def test_a_deleted_response_is_not_found(router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str) -> None:
    await router.PutResponse(pb.PutResponseRequest(stored=stored(tenant)))
    await router.DeleteResponse(pb.DeleteResponseRequest(tenant_id=tenant, response_id="resp_1"))
    for call in (
        lambda: router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_1")),
        lambda: router.DeleteResponse(pb.DeleteResponseRequest(tenant_id=tenant, response_id="resp_1")),
    ):
        error = await _error(call())
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert NOT_FOUND_REASON.encode() in _details(error)[2]


async def test_another_tenants_response_answers_exactly_like_an_absent_one(
    router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str
) -> None:
    other = f"{tenant}-other"
    mine = stored(tenant, "resp_mine", response=b"mine")
    await router.PutResponse(pb.PutResponseRequest(stored=mine))
    as_other = pb.GetResponseRequest(tenant_id=other, response_id="resp_mine")
    foreign_get = await _error(router.GetResponse(as_other))
    foreign_delete = await _error(
        router.DeleteResponse(pb.DeleteResponseRequest(tenant_id=other, response_id="resp_mine"))
    )
    # The owner's response was neither shown nor touched.
    assert (await router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_mine"))).stored == mine

    # The same id is a separate row for another tenant: each sees only its own.
    await router.PutResponse(pb.PutResponseRequest(stored=stored(other, "resp_mine", response=b"theirs")))
    theirs = await router.GetResponse(as_other)
    assert theirs.stored.response == b"theirs"
    await router.DeleteResponse(pb.DeleteResponseRequest(tenant_id=other, response_id="resp_mine"))
    assert (await router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_mine"))).stored == mine

    # Once the id exists nowhere, the other tenant gets exactly the answer it got while it was the owner's.
    await router.DeleteResponse(pb.DeleteResponseRequest(tenant_id=tenant, response_id="resp_mine"))
    absent_get = await _error(router.GetResponse(as_other))
    absent_delete = await _error(
        router.DeleteResponse(pb.DeleteResponseRequest(tenant_id=other, response_id="resp_mine"))
    )
    assert foreign_get.code() == grpc.StatusCode.NOT_FOUND
    assert _details(foreign_get) == _details(absent_get) == _details(foreign_delete) == _details(absent_delete)


async def test_an_empty_tenant_is_refused_on_every_rpc(router: pb_grpc.ResponseStoreServiceAsyncStub) -> None:
    for call in (
        lambda: router.PutResponse(pb.PutResponseRequest(stored=stored(""))),
        lambda: router.GetResponse(pb.GetResponseRequest(tenant_id="", response_id="resp_1")),
        lambda: router.DeleteResponse(pb.DeleteResponseRequest(tenant_id="", response_id="resp_1")),
    ):
        error = await _error(call())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tenant_id: must not be empty" in (error.details() or "")


@pytest.mark.parametrize(
    ("response_id", "why"),
    [
        ("", "must not be empty"),
        ("resp_\x00", "must not contain NUL"),
        ("resp_\n", "must not contain NUL or control"),
        ("r" * (MAX_ID_BYTES + 1), f"must not be longer than {MAX_ID_BYTES} bytes"),
    ],
)
async def test_a_bad_response_id_is_refused(
    router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str, response_id: str, why: str
) -> None:
    for call in (
        lambda: router.PutResponse(pb.PutResponseRequest(stored=stored(tenant, response_id))),
        lambda: router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id=response_id)),
        lambda: router.DeleteResponse(pb.DeleteResponseRequest(tenant_id=tenant, response_id=response_id)),
    ):
        error = await _error(call())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert why in (error.details() or "")


async def test_a_nul_in_the_key_or_previous_id_is_refused(
    router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str
) -> None:
    for fields in ({"key_id": "k\x00"}, {"previous_response_id": "resp_\x00"}):
        error = await _error(router.PutResponse(pb.PutResponseRequest(stored=stored(tenant, **fields))))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"stored.{next(iter(fields))}: must not contain NUL" in (error.details() or "")


async def test_a_payload_over_the_cap_is_refused_and_not_stored(
    router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str
) -> None:
    half = MAX_BYTES // 2
    # Exactly at the cap (both payloads together) is stored.
    await router.PutResponse(
        pb.PutResponseRequest(stored=stored(tenant, "resp_full", response=b"a" * half, input_items=b"b" * half))
    )
    error = await _error(
        router.PutResponse(
            pb.PutResponseRequest(
                stored=stored(tenant, "resp_big", response=b"a" * half, input_items=b"b" * (half + 1))
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"must not exceed {MAX_BYTES} bytes" in (error.details() or "")
    missing = await _error(router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_big")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    # A refused replacement leaves the stored one as it was.
    await _error(
        router.PutResponse(pb.PutResponseRequest(stored=stored(tenant, "resp_full", response=b"x" * MAX_BYTES * 2)))
    )
    kept = await router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_full"))
    assert kept.stored.response == b"a" * half


async def test_an_invalid_timestamp_is_refused_and_a_missing_one_is_now(
    router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str
) -> None:
    bad = stored(tenant)
    bad.created_at.seconds = 10**12  # past year 9999
    error = await _error(router.PutResponse(pb.PutResponseRequest(stored=bad)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stored.created_at" in (error.details() or "")

    undated = stored(tenant, "resp_undated")
    undated.ClearField("created_at")
    before = datetime.now(UTC) - timedelta(seconds=1)
    await router.PutResponse(pb.PutResponseRequest(stored=undated))
    got = await router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_undated"))
    assert before <= got.stored.created_at.ToDatetime(UTC) <= datetime.now(UTC) + timedelta(seconds=1)


@pytest.mark.parametrize("identity", ["edge", "ratelimit"])
async def test_a_caller_other_than_the_router_is_refused(store: Store, tenant: str, identity: str) -> None:
    async with store.channel(identity) as channel:
        stub = pb_grpc.ResponseStoreServiceStub(channel)
        for call in (
            lambda: stub.PutResponse(pb.PutResponseRequest(stored=stored(tenant))),
            lambda: stub.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_1")),
            lambda: stub.DeleteResponse(pb.DeleteResponseRequest(tenant_id=tenant, response_id="resp_1")),
        ):
            error = await _error(call())
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    async with store.channel("router") as channel:
        # Nothing the stranger sent was stored.
        absent = await _error(
            pb_grpc.ResponseStoreServiceStub(channel).GetResponse(
                pb.GetResponseRequest(tenant_id=tenant, response_id="resp_1")
            )
        )
        assert absent.code() == grpc.StatusCode.NOT_FOUND


async def test_the_retention_purge_deletes_only_what_expired_in_bounded_batches(
    store: Store, router: pb_grpc.ResponseStoreServiceAsyncStub, tenant: str
) -> None:
    # Long before what the other tests store (2026): the purge below reaches only these rows.
    now = datetime(2002, 1, 1, tzinfo=UTC)
    old = [f"resp_old{i}" for i in range(5)]
    for response_id in old:
        await router.PutResponse(
            pb.PutResponseRequest(stored=stored(tenant, response_id, created_at=now - timedelta(days=31)))
        )
    await router.PutResponse(
        pb.PutResponseRequest(stored=stored(tenant, "resp_young", created_at=now - timedelta(days=29)))
    )
    engine = create_engine(store.database_url)
    responses = SqlResponseStore(engine)
    try:
        # 0 days: kept forever.
        assert await purge_expired(responses, 0, lambda: now, batch=2) == 0
        # One batch of two at most per run when told so; the rest waits for the next run.
        assert await purge_expired(responses, 30, lambda: now, batch=2, max_batches=1) == 2
        # Then batches until one comes back short.
        assert await purge_expired(responses, 30, lambda: now, batch=2) == 3
        assert await purge_expired(responses, 30, lambda: now, batch=2) == 0
    finally:
        await engine.dispose()
    for response_id in old:
        error = await _error(router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id=response_id)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    young = await router.GetResponse(pb.GetResponseRequest(tenant_id=tenant, response_id="resp_young"))
    assert young.stored.response_id == "resp_young"


async def test_the_service_purges_expired_responses_when_it_starts(tmp_path: Path) -> None:
    """The purge is wired onto the service's periodic loop, which runs once at start."""
    url = f"sqlite:///{tmp_path}/metering.db"
    write_local_ca(tmp_path / "tls", ("metering", "router"))
    now = datetime.now(UTC)
    first, port = await _start(url, tmp_path / "tls", response_retention_days=7)
    try:
        running = Store(port, tmp_path / "tls", url)
        async with running.channel("router") as channel:
            stub = pb_grpc.ResponseStoreServiceStub(channel)
            for response_id, age in (("resp_expired", 8), ("resp_kept", 6)):
                sent = stored("acme", response_id, created_at=now - timedelta(days=age))
                await stub.PutResponse(pb.PutResponseRequest(stored=sent))
    finally:
        await first.stop(0)

    second, port = await _start(url, tmp_path / "tls", response_retention_days=7)
    try:
        async with Store(port, tmp_path / "tls", url).channel("router") as channel:
            stub = pb_grpc.ResponseStoreServiceStub(channel)
            request = pb.GetResponseRequest(tenant_id="acme", response_id="resp_expired")
            async with asyncio.timeout(10):
                while True:
                    try:
                        await stub.GetResponse(request)
                    except grpc.aio.AioRpcError as error:
                        assert error.code() == grpc.StatusCode.NOT_FOUND
                        break
                    await asyncio.sleep(0.05)
            kept = await stub.GetResponse(pb.GetResponseRequest(tenant_id="acme", response_id="resp_kept"))
            assert kept.stored.response_id == "resp_kept"
    finally:
        await second.stop(0)


def test_retention_is_configurable_and_checked() -> None:
    assert load_config(None, env={}).metering.response_retention_days == 30
    assert load_config(None, env={"GATEWAY_RESPONSE_RETENTION_DAYS": "0"}).metering.response_retention_days == 0
    with pytest.raises(ConfigError, match=r"metering\.response_retention_days"):
        load_config(None, env={"GATEWAY_RESPONSE_RETENTION_DAYS": "-1"})
