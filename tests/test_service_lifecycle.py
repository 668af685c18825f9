"""A service process: health, reflection, JSON logs with the request id, and a graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.healthcheck import check
from tests.providers.harness import chunks_in
from tests.servers import free_port, wait_until


@pytest.fixture
def providers_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port, metrics_port = free_port(), free_port()
    log = tmp_path / "providers.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    # Plaintext on purpose: this is about the lifecycle; tests/security covers the TLS ports.
    env["GATEWAY_INTERNAL_TLS"] = "off"
    env["GATEWAY_PROVIDERS_LISTEN"] = f"127.0.0.1:{port}"
    env["GATEWAY_PROVIDERS_METRICS_PORT"] = str(metrics_port)
    (tmp_path / "metrics-port").write_text(str(metrics_port))
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.providers"], env=env, stdout=out, stderr=out)
    try:
        wait_until(lambda: check(f"127.0.0.1:{port}", 0.5), "providers service")
        yield process, port, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def test_sigterm_lets_in_flight_streams_finish(
    providers_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, log = providers_process
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        request = providers_pb2.StreamChatRequest(
            target=providers_pb2.Target(provider="mock", model="slow-100"),
            completion=chat_pb2.ChatCompletionRequest(
                messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="one two three four five six")]
            ),
        )
        stream = stub.StreamChat(request, metadata=(("x-request-id", "lifecycle-1"),))
        chunks = aiter(stream)
        first = await anext(chunks)
        assert first.chunk.choices[0].delta.role == chat_pb2.ROLE_ASSISTANT
        process.send_signal(signal.SIGTERM)
        rest = [chunk async for item in chunks for chunk in chunks_in(item)]
        # Every word still arrived, then the usage chunk: the stream was drained, not cut.
        text = "".join(c.choices[0].delta.content for c in [*chunks_in(first), *rest] if c.choices)
        assert "one two three four five six" in text
        assert rest[-1].HasField("usage")
    assert process.wait(timeout=15) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "message", "service", "request_id"} <= set(line) for line in lines)
    assert any(line["message"].startswith("providers shutting down") for line in lines)


async def test_health_reflection_and_metrics(providers_process: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    _, port, log = providers_process
    metrics_port = (log.parent / "metrics-port").read_text()
    async with httpx.AsyncClient() as client:
        metrics = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert metrics.status_code == 200 and "python_info" in metrics.text
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service="gateway.providers.v1.ProviderService"))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await call.read()
        await call.done_writing()
        names = {s.name for s in answer.list_services_response.service}
        assert {"gateway.providers.v1.ProviderService", "grpc.health.v1.Health"} <= names


def test_sigterm_stops_a_service_still_waiting_for_its_dependency(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_INTERNAL_TLS"] = "off"
    env["GATEWAY_RATELIMIT_LISTEN"] = f"127.0.0.1:{free_port()}"
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    log = tmp_path / "ratelimit.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.ratelimit"], env=env, stdout=out, stderr=out)
    try:
        wait_until(lambda: "redis" in log.read_text().lower(), "the service to report its missing Redis")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
