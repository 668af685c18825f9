"""Replicas as processes: 2 routers, 2 providers and 2 ratelimit services on one Redis.

Each replica serves a share of the calls, a limit holds across them, every admitted request is in
the ledger exactly once, and throughput grows with the replicas. On a 2-core machine a single
Python replica set can already use both cores, so the ratio is measured with CPU affinity: replica
1 of router, providers and ratelimit runs on core 0, replica 2 on core 1. The same load is then
run again after replica 2 of each is stopped, leaving the one-replica topology on core 0 with the
very same shared processes (auth, metering, edge, Redis, the fake upstream, this driver: not
pinned, the same work in both), so the ratio shows what the second replica set buys, not absolute
speed; and one start instead of two keeps the test short.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.errors import GatewayError, Reason
from gateway_common.grpc_client import open_channel
from suite.supervisor import Suite, free_port
from tests.servers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 12
"""The limited model's requests per day, per key: what every router together may admit."""
CONFIG = """
providers:
  fake:
    type: openai_compatible
    base_url: {upstream}
    api_key_env: FAKE_UPSTREAM_KEY
models:
  upstream:
    deployments:
      - provider: fake
        model: plain
  limited:
    deployments:
      - provider: fake
        model: plain
    # A day window: a minute window could roll over during the burst and admit twice the limit.
    limits:
      requests_per_day: {limit}
limits:
  requests_per_minute: 0
"""
REPLICATED = ("router", "providers", "ratelimit")
WARMUP_S, MEASURE_S, CONCURRENCY = 1.0, 4.0, 24


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    """The fake OpenAI upstream in a process of its own (in this process it would share the driver's core)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_upstream", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(answers, "fake upstream", timeout_s=30)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Running:
    """A started topology and the key of its one tenant."""

    suite: Suite
    key: str


def _start(tmp: Path, upstream: str, redis_url: str) -> Running:
    key = f"gw-{secrets.token_urlsafe(24)}"
    config = tmp / "gateway.yaml"
    config.write_text(CONFIG.format(upstream=upstream, limit=LIMIT))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_TENANT_KEYS": f"replicas-{uuid.uuid4().hex[:8]}:{key}",
            "FAKE_UPSTREAM_KEY": "upstream-secret",
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
    )
    # Replica n on core n-1; the shared processes go wherever the scheduler puts them.
    cpus = {f"{service}-{n}": {n - 1} for service in REPLICATED for n in (1, 2)}
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(
        data_dir=tmp,
        ports=ports,
        env=env,
        replicas=dict.fromkeys(REPLICATED, 2),
        metrics=True,
        cpus=cpus,
    )
    suite.start()
    return Running(suite, key)


def _request(model: str) -> router_pb2.ChatRequest:
    message = chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Hi from a replica test")
    return router_pb2.ChatRequest(
        completion=chat_pb2.ChatCompletionRequest(model=model, max_tokens=16, messages=[message])
    )


class Driver:
    """Calls the routers' gRPC API as an internal service does: one channel balanced over every router."""

    def __init__(self, running: Running) -> None:
        suite = running.suite
        self.channel = open_channel(suite.address("router"), credentials=suite.credentials(None))
        self.router = router_pb2_grpc.RouterServiceStub(self.channel)
        self.key = running.key
        self.admitted: list[str] = []
        """Request ids of every call that got a completion."""

    async def chat(self, model: str = "upstream") -> str:
        """One Chat call; returns its request id."""
        request_id = uuid.uuid4().hex
        metadata = (("authorization", f"Bearer {self.key}"), ("x-request-id", request_id))
        reply = await self.router.Chat(_request(model), metadata=metadata, timeout=20)
        assert reply.completion.choices[0].message.text
        self.admitted.append(request_id)
        return request_id

    async def load(self, seconds: float) -> int:
        """Calls completed by ``CONCURRENCY`` closed-loop workers within ``seconds``."""
        deadline = time.monotonic() + seconds
        done = 0

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await self.chat()
                done += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done


async def _samples(suite: Suite, names: list[str]) -> dict[str, dict[str, float]]:
    """Per process: its router requests (``gateway_requests_total``) and CPU seconds so far."""
    found: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for name in names:
            text = (await client.get(suite.metrics_url(name))).text
            values = {"requests": 0.0, "cpu": 0.0}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "gateway_requests_total":
                        values["requests"] += sample.value
                    elif sample.name == "process_cpu_seconds_total":
                        values["cpu"] = sample.value
            found[name] = values
    return found


Samples = Mapping[str, Mapping[str, float]]


def _delta(after: Samples, before: Samples, what: str) -> dict[str, float]:
    return {name: after[name][what] - before[name][what] for name in after}


def _ledger(data_dir: Path) -> Counter[str]:
    with sqlite3.connect(f"file:{data_dir / 'metering.db'}?mode=ro", uri=True) as db:
        return Counter(row[0] for row in db.execute("SELECT request_id FROM usage_events"))


async def _ledger_holds(data_dir: Path, expected: list[str], timeout_s: float = 30.0) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        ledger = await asyncio.to_thread(_ledger, data_dir)
        if sum(ledger.values()) >= len(expected) or time.monotonic() > deadline:
            return ledger
        await asyncio.sleep(0.2)


async def _throughput(driver: Driver) -> float:
    await driver.load(WARMUP_S)
    return await driver.load(MEASURE_S) / MEASURE_S


async def test_replicas_share_the_load_keep_the_limits_and_scale(
    tmp_path: Path, redis_url: str, upstream_url: str
) -> None:
    started = time.monotonic()
    running = await asyncio.to_thread(_start, tmp_path, upstream_url, redis_url)
    suite = running.suite
    names = [name for service in REPLICATED for name in suite.names(service)]
    assert names == ["router-1", "router-2", "providers-1", "providers-2", "ratelimit-1", "ratelimit-2"]
    driver = Driver(running)
    try:
        # (b) The limit holds across both routers and both ratelimit replicas: a concurrent burst
        # of three times the limit is admitted exactly LIMIT times, the rest refused by the limit.
        outcomes = await asyncio.gather(*(driver.chat("limited") for _ in range(3 * LIMIT)), return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(outcomes) - len(refused) == LIMIT
        for error in refused:
            assert isinstance(error, grpc.aio.AioRpcError), error
            assert GatewayError.from_rpc_error(error).reason == Reason.RATE_LIMITED

        # (a) Every replica serves a share: routers by their request counters, providers and
        # ratelimit (no per-call counter of their own) by the CPU their process spent on the load.
        before = await _samples(suite, names)
        replicated_rps = await _throughput(driver)
        # The edge dials the routers at the same list and balances too.
        async with httpx.AsyncClient(base_url=f"{suite.edge_url}/v1", timeout=20) as edge:
            for _ in range(20):
                request_id = uuid.uuid4().hex
                reply = await edge.post(
                    "/chat/completions",
                    headers={"authorization": f"Bearer {running.key}", "x-request-id": request_id},
                    json={"model": "upstream", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
                )
                assert reply.status_code == 200, reply.text
                driver.admitted.append(request_id)
        after = await _samples(suite, names)
        requests, cpu = _delta(after, before, "requests"), _delta(after, before, "cpu")
        print(f"\nper-replica requests {requests}\nper-replica CPU seconds {cpu}")
        total = requests["router-1"] + requests["router-2"]
        assert total == len(driver.admitted) - LIMIT
        for name in ("router-1", "router-2"):
            assert requests[name] >= 0.3 * total, requests
        for service in ("providers", "ratelimit"):
            pair = [cpu[f"{service}-1"], cpu[f"{service}-2"]]
            assert min(pair) >= 0.25 * sum(pair) > 0, (service, pair)

        # (d) Scale down to one replica set, the one pinned to core 0: the same shared processes,
        # the same load, and every process's channels left with one address that answers.
        for name in ("router-2", "providers-2", "ratelimit-2"):
            await asyncio.to_thread(suite.stop_process, name)
        single_rps = await _throughput(driver)
        assert sorted(suite.dead()) == ["providers-2", "ratelimit-2", "router-2"]

        # (c) Every admitted request is in the ledger exactly once (those router-2 served too: it
        # shipped its spool before it exited); refused ones reached no provider and are not.
        ledger = await _ledger_holds(suite.data_dir, driver.admitted)
        assert ledger == Counter(driver.admitted)
    finally:
        await driver.channel.close()
        await asyncio.to_thread(suite.stop)
    ratio = replicated_rps / single_rps
    print(
        f"throughput: 1 replica {single_rps:.0f}/s, 2 replicas {replicated_rps:.0f}/s, ratio {ratio:.2f} "
        f"(test took {time.monotonic() - started:.0f}s)"
    )
    assert ratio > 1.2
