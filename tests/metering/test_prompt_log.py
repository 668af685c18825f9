"""The prompt log: redacted before it is stored, read back per tenant only, newest first."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import select

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway_common.config import GatewayConfig, MeteringConfig, PromptLogConfig
from gateway_common.redaction import Redactor
from services.metering.prompt_log import PREVIEW_CHARS, request_preview
from services.metering.server import build
from services.metering.storage.sql import PromptLogRow, create_engine
from tests.metering.databases import create_postgres_database


@dataclass
class Metering:
    stub: metering_pb2_grpc.MeteringServiceAsyncStub
    database_url: str


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def metering(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Metering]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('prompt-log')}/ledger.db"
    else:
        url = await create_postgres_database(request.getfixturevalue("postgres_url"), "metering_prompt_log")
    config = GatewayConfig(
        metering=MeteringConfig(database_url=url), prompt_log=PromptLogConfig(redact_patterns=[r"ACME-\d{4}"])
    )
    app = build(config, listen="127.0.0.1:0")
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Metering(metering_pb2_grpc.MeteringServiceStub(channel), url)
    finally:
        await channel.close(None)
        await app.stop(0)


def _event(tenant: str, text: str, at: datetime, answer: str = "ok") -> metering_pb2.UsageEvent:
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(at)
    request_json = json.dumps({"model": "m", "messages": [{"role": "ROLE_USER", "content": [{"text": text}]}]})
    return metering_pb2.UsageEvent(
        event_id=uuid.uuid4().hex,
        request_id="req",
        tenant_id=tenant,
        key_id=f"key-{tenant}",
        model="m",
        prompt_tokens=3,
        completion_tokens=4,
        outcome=metering_pb2.OUTCOME_SUCCESS,
        time=time,
        operation="chat",
        prompt_log=metering_pb2.PromptLog(request_json=request_json, response_text=answer),
    )


async def _stored(url: str) -> str:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            table = PromptLogRow.__table__  # type: ignore[attr-defined]
            rows = (await connection.execute(select(table.c.request_json, table.c.response_text))).all()
    finally:
        await engine.dispose()
    return " ".join(a + b for a, b in rows)


async def test_secrets_are_redacted_before_the_database(metering: Metering) -> None:
    """An sk- key, a bearer token and a configured pattern never reach the prompt_logs table."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    secret, token = "sk-" + uuid.uuid4().hex, uuid.uuid4().hex
    text = f"key {secret} auth Bearer {token} order ACME-1234"
    await metering.stub.RecordEvents(
        metering_pb2.RecordEventsRequest(events=[_event(tenant, text, datetime.now(UTC), answer=f"echo {secret}")])
    )
    stored = await _stored(metering.database_url)
    assert "order [REDACTED]" in stored
    assert secret not in stored and token not in stored and "ACME-1234" not in stored
    query = metering_pb2.QueryPromptLogRequest(tenant_id=tenant, limit=5)
    entries = (await metering.stub.QueryPromptLog(query)).entries
    assert entries[0].request_preview == "key [REDACTED] auth [REDACTED] order [REDACTED]"
    assert entries[0].response_preview == "echo [REDACTED]"


async def test_entries_are_the_tenants_own_newest_first_and_bounded(metering: Metering) -> None:
    """limit N gives the tenant's N latest entries with usage; another tenant's never appear."""
    mine, other = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [_event(mine, f"mine {i}", start + timedelta(minutes=i)) for i in range(3)]
    events.append(_event(other, "theirs", start + timedelta(hours=1)))
    await metering.stub.RecordEvents(metering_pb2.RecordEventsRequest(events=events))
    response = await metering.stub.QueryPromptLog(metering_pb2.QueryPromptLogRequest(tenant_id=mine, limit=2))
    assert [e.request_preview for e in response.entries] == ["mine 2", "mine 1"]
    first = response.entries[0]
    assert (first.tenant_id, first.key_id, first.model, first.prompt_tokens, first.completion_tokens) == (
        mine,
        f"key-{mine}",
        "m",
        3,
        4,
    )
    assert first.time.ToDatetime(tzinfo=UTC) == start + timedelta(minutes=2)


@pytest.mark.parametrize(("tenant", "limit", "code"), [("", 10, "PERMISSION_DENIED"), ("t", 0, "INVALID_ARGUMENT")])
async def test_unscoped_or_unbounded_reads_are_refused(metering: Metering, tenant: str, limit: int, code: str) -> None:
    """No tenant: refused whoever asks (the log is never read across tenants); limit outside 1..1000: 400."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await metering.stub.QueryPromptLog(metering_pb2.QueryPromptLogRequest(tenant_id=tenant, limit=limit))
    assert caught.value.code().name == code
    with pytest.raises(grpc.aio.AioRpcError):
        await metering.stub.QueryPromptLog(metering_pb2.QueryPromptLogRequest(tenant_id="t", limit=1001))


def test_previews_are_the_message_text_and_short() -> None:
    """A preview is the messages' text (not the JSON), cut at PREVIEW_CHARS; odd JSON falls back to itself."""
    long = json.dumps({"messages": [{"content": "x" * 2000}]})
    assert request_preview(long) == "x" * PREVIEW_CHARS + "…"
    assert request_preview("not json") == "not json"


def test_redactor_keeps_everything_else() -> None:
    """Only matches change."""
    redact = Redactor(["secret-[a-z]+"])
    redacted = redact("hello sk-abcdefgh12 and secret-word, bearer abc.def")
    assert redacted == "hello [REDACTED] and [REDACTED], [REDACTED]"
    assert redact("sk- is not a key, nor is skater") == "sk- is not a key, nor is skater"
