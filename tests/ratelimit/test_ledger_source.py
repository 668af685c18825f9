"""The rate limiter's view of the ledger: metering's SumUsageByDescriptor over real gRPC, on SQLite
and on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway_common.config import GatewayConfig, MeteringConfig
from services.metering.server import build
from services.ratelimit.rebuild import LedgerUsage, MeteringLedger
from tests.metering.databases import create_postgres_database

T0 = int(datetime(2030, 5, 1, tzinfo=UTC).timestamp())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[metering_pb2_grpc.MeteringServiceAsyncStub]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ledger')}/ledger.db"
    else:
        url = await create_postgres_database(request.getfixturevalue("postgres_url"), "ratelimit_ledger")
    app = build(GatewayConfig(metering=MeteringConfig(database_url=url)), listen="127.0.0.1:0")
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield metering_pb2_grpc.MeteringServiceStub(channel)
    finally:
        await channel.close()
        await app.stop(0)


def _event(
    tenant: str, key: str, model: str, at_s: int, prompt: int, completion: int, cost: int
) -> metering_pb2.UsageEvent:
    return metering_pb2.UsageEvent(
        event_id=uuid.uuid4().hex,
        request_id=uuid.uuid4().hex,
        tenant_id=tenant,
        key_id=key,
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_micro_usd=cost,
        outcome=metering_pb2.OUTCOME_SUCCESS,
        time=timestamp_pb2.Timestamp(seconds=at_s),
    )


async def test_sums_per_tenant_key_and_model_since_a_time(stub: metering_pb2_grpc.MeteringServiceAsyncStub) -> None:
    tenant = uuid.uuid4().hex
    events = [
        _event(tenant, "k1", "gpt", T0 - 60, 1_000, 1_000, 99_000),  # before the window: not counted
        _event(tenant, "k1", "gpt", T0, 10, 5, 100),
        _event(tenant, "k1", "gpt", T0 + 60, 20, 5, 200),
        _event(tenant, "k1", "claude", T0 + 60, 1, 1, 7),
        _event(tenant, "k2", "gpt", T0 + 120, 3, 0, 30),
    ]
    await stub.RecordEvents(metering_pb2.RecordEventsRequest(events=events))

    rows = [r for r in await MeteringLedger(stub).usage_since(T0) if r.tenant_id == tenant]

    assert rows == [
        LedgerUsage(tenant, "k1", "claude", 1, 2, 7),
        LedgerUsage(tenant, "k1", "gpt", 2, 40, 300),
        LedgerUsage(tenant, "k2", "gpt", 1, 3, 30),
    ]


async def test_a_start_time_is_required(stub: metering_pb2_grpc.MeteringServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SumUsageByDescriptor(metering_pb2.SumUsageByDescriptorRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sums_apart_the_events_each_tenant_credential_served(
    stub: metering_pb2_grpc.MeteringServiceAsyncStub,
) -> None:
    tenant = uuid.uuid4().hex
    events = [_event(tenant, "k1", "gpt", T0 + i, 10, 5, 100) for i in range(4)]
    for event, credential in zip(events, ["", "cred_a", "cred_a", "cred_b"], strict=True):
        event.credential_id = credential
    await stub.RecordEvents(metering_pb2.RecordEventsRequest(events=events))

    rows = [r for r in await MeteringLedger(stub).usage_since(T0) if r.tenant_id == tenant]

    assert rows == [
        LedgerUsage(tenant, "k1", "gpt", 1, 15, 100),
        LedgerUsage(tenant, "k1", "gpt", 2, 30, 200, "cred_a"),
        LedgerUsage(tenant, "k1", "gpt", 1, 15, 100, "cred_b"),
    ]
