"""Two real service processes sharing one Redis admit exactly the limit under concurrent load."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from tests.servers import free_port

if TYPE_CHECKING:
    from gateway.ratelimit.v1.ratelimit_pb2_grpc import RateLimitServiceAsyncStub as Stub

pb = ratelimit_pb2
ROOT = Path(__file__).resolve().parents[2]


async def _serving(channel: grpc.aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _spawn(port: int, redis_url: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = {
        **os.environ,
        "GATEWAY_CONFIG": "",
        # Plaintext on purpose: this is about shared counters; tests/security covers the TLS ports.
        "GATEWAY_INTERNAL_TLS": "off",
        "GATEWAY_RATELIMIT_LISTEN": f"127.0.0.1:{port}",
        # Needed as well while load_config rejects a LISTEN override without an ADDR one.
        "GATEWAY_RATELIMIT_ADDR": f"127.0.0.1:{port}",
        "REDIS_URL": redis_url,
        # No metering here: these replicas test the counting, not rebuilding lost counters.
        "GATEWAY_RATELIMIT_REBUILD_FROM_LEDGER": "false",
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    log = Path(tempfile.mkstemp(prefix="gw-ratelimit-", suffix=".log")[1])
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.ratelimit"], cwd=ROOT, env=env, stdout=sink, stderr=sink
        )
    return proc, log


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
async def replicas(redis_url: str) -> AsyncIterator[list[Stub]]:
    """Two `python -m services.ratelimit` processes on one Redis, SERVING, with a stub to each."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    channels: list[grpc.aio.Channel] = []
    try:
        for _ in range(2):
            port = free_port()
            procs.append(_spawn(port, redis_url))
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        for (proc, log), channel in zip(procs, channels, strict=True):
            for _ in range(600):
                if await _serving(channel):
                    break
                if proc.poll() is not None:
                    raise AssertionError(f"replica exited: {log.read_text()}")
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"replica not SERVING after 30 s: {log.read_text()}")
        yield [ratelimit_pb2_grpc.RateLimitServiceStub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close(None)
        for proc, log in procs:
            _stop(proc, log)


def one_descriptor(unit: int, window: int, limit: int, max_concurrent: int | None = None) -> pb.DescriptorLimits:
    return pb.DescriptorLimits(
        descriptor=pb.Descriptor(entries=[pb.DescriptorEntry(key="key", value=uuid.uuid4().hex)]),
        quotas=[quota_pb2.Quota(unit=unit, window=window, limit=limit)],  # type: ignore[arg-type]
        max_concurrent=max_concurrent,
    )


async def burst(
    stubs: Sequence[Stub], n: int, limits: pb.DescriptorLimits, amounts: pb.Amounts
) -> list[tuple[str, pb.AcquireResponse]]:
    """``n`` concurrent Acquires, alternating between the replicas; (reservation id, answer) each."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    calls = [
        stubs[i % 2].Acquire(pb.AcquireRequest(reservation_id=rid, limits=[limits], amounts=amounts), timeout=30)
        for i, rid in enumerate(ids)
    ]
    answers = await asyncio.gather(*calls)
    assert not any(answer.degraded for answer in answers)
    return list(zip(ids, answers, strict=True))


async def test_requests_limit_is_exact_across_replicas(replicas: list[Stub]) -> None:
    limits = one_descriptor(quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_DAY, 37)
    answers = await burst(replicas, 200, limits, pb.Amounts(requests=1))
    assert sum(answer.allowed for _, answer in answers) == 37
    refused = [answer for _, answer in answers if not answer.allowed]
    assert all(answer.statuses[0].exceeded and answer.HasField("retry_after") for answer in refused)


async def test_tokens_limit_is_exact_and_settles_on_either_replica(replicas: list[Stub]) -> None:
    limits = one_descriptor(quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_DAY, 3_050)
    answers = await burst(replicas, 200, limits, pb.Amounts(requests=1, tokens=100))
    admitted = [rid for rid, answer in answers if answer.allowed]
    assert len(admitted) == 30

    # Settle each on the other replica at half its estimate: 1500 of 3050 tokens used.
    settled = await asyncio.gather(
        *(
            replicas[(i + 1) % 2].Settle(pb.SettleRequest(reservation_id=rid, actual=pb.Amounts(requests=1, tokens=50)))
            for i, rid in enumerate(admitted)
        )
    )
    assert all(reply.found for reply in settled)
    again = await burst(replicas, 100, limits, pb.Amounts(requests=1, tokens=100))
    assert sum(answer.allowed for _, answer in again) == 15


async def test_spend_budget_is_never_exceeded_across_replicas(replicas: list[Stub]) -> None:
    limits = one_descriptor(quota_pb2.UNIT_COST_MICRO_USD, quota_pb2.WINDOW_MONTH, 100_000)
    answers = await burst(replicas, 200, limits, pb.Amounts(requests=1, cost_micro_usd=7_000))
    assert sum(answer.allowed for _, answer in answers) == 14
    # Reserved spend is 14 x 7000 = 98000 of 100000: what remains is exactly the difference.
    probe = await replicas[0].Acquire(pb.AcquireRequest(reservation_id=uuid.uuid4().hex, limits=[limits]))
    assert probe.statuses[0].remaining == 2_000


async def test_concurrency_cap_is_exact_across_replicas(replicas: list[Stub]) -> None:
    limits = one_descriptor(quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_DAY, 1_000, max_concurrent=5)
    answers = await burst(replicas, 60, limits, pb.Amounts(requests=1))
    assert sum(answer.allowed for _, answer in answers) == 5
