"""The telemetry log: one JSON line per ledger event, at the configured path, duplicates skipped,
never a prompt or a key."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway_common.config import GatewayConfig, MeteringConfig, TelemetryConfig, load_config
from services.metering.server import build


def _event(event_id: str) -> metering_pb2.UsageEvent:
    event = metering_pb2.UsageEvent(
        event_id=event_id,
        request_id=f"req-{event_id}",
        tenant_id="anonymous",
        key_id="client:dev-local-1",
        model="default-chat",
        provider="openai (stub)",
        upstream_model="gpt-4o-mini",
        prompt_tokens=7,
        completion_tokens=17,
        cost_micro_usd=1500,
        outcome=metering_pb2.OUTCOME_SUCCESS,
        operation="chat",
        attempts=1,
    )
    event.time.GetCurrentTime()
    event.latency.FromMilliseconds(42)
    event.prompt_log.request_json = json.dumps({"messages": [{"role": "user", "content": "SECRET PROMPT"}]})
    event.prompt_log.response_text = "SECRET ANSWER"
    return event


async def test_one_line_per_new_event_and_none_for_a_redelivery(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "telemetry.jsonl"
    config = GatewayConfig(
        metering=MeteringConfig(database_url=f"sqlite:///{tmp_path}/ledger.db"),
        telemetry=TelemetryConfig(log_file=str(log_file)),
    )
    app = build(config, listen="127.0.0.1:0")
    port = await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = metering_pb2_grpc.MeteringServiceStub(channel)
            await stub.RecordEvents(metering_pb2.RecordEventsRequest(events=[_event("e1"), _event("e2")]))
            # At-least-once delivery: the same batch again, plus one new event.
            await stub.RecordEvents(metering_pb2.RecordEventsRequest(events=[_event("e1"), _event("e2"), _event("e3")]))
    finally:
        await app.stop()
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["event_id"] for line in lines] == ["e1", "e2", "e3"]
    first = lines[0]
    assert first["request_id"] == "req-e1"
    assert (first["tenant"], first["key_id"], first["client_id"]) == ("anonymous", "client:dev-local-1", "dev-local-1")
    assert (first["model"], first["provider"], first["outcome"]) == ("default-chat", "openai (stub)", "success")
    assert (first["prompt_tokens"], first["completion_tokens"], first["total_tokens"]) == (7, 17, 24)
    assert first["cost_usd"] == 0.0015
    assert first["latency_ms"] == 42
    assert first["time"].endswith("Z")
    assert "SECRET" not in text


def test_the_log_file_comes_from_the_environment() -> None:
    assert load_config(env={"GATEWAY_TELEMETRY_LOG_FILE": "/tmp/t.jsonl"}).telemetry.log_file == "/tmp/t.jsonl"
