"""The suite as real processes for the async-jobs tests: a slow mock provider (so a kill lands
mid-job), short job leases (so a killed router's job comes back in seconds), webhooks allowed to
loopback, and the ledger read straight from metering's database (``UsageSuite``)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from suite.supervisor import Suite
from tests.faults.usage_harness import UsageSuite
from tests.servers import free_port

CONFIG = """
providers:
  slowmock:
    type: mock
    latency_ms: {latency_ms}
models:
  slow:
    deployments:
      - provider: slowmock
        model: demo
        input_usd_per_million: 1.0
        output_usd_per_million: 2.0
  priced:
    deployments:
      - provider: mock
        model: demo
        input_usd_per_million: 1000.0
        output_usd_per_million: 2000.0
router:
  max_attempts: 1
  attempt_timeout_s: 20
limits:
  requests_per_minute: 100000
metering:
  flush_interval_s: 0.1
"""

WEBHOOK_SECRET = "test-webhook-secret"


@dataclass
class JobsSuite(UsageSuite):
    """The suite, acme's key (``key``), beta's key and the admin key."""

    other_key: str = ""
    admin_key: str = ""


@contextmanager
def jobs_suite(
    data: Path, *, redis_url: str | None = None, latency_ms: int = 300, workers: int = 2
) -> Iterator[JobsSuite]:
    """The suite in ``data`` (jobs on SQLite, or on Redis at ``redis_url``); tenants acme and beta."""
    data.mkdir(parents=True, exist_ok=True)
    config = data / "gateway.yaml"
    config.write_text(CONFIG.format(latency_ms=latency_ms))
    key, other = (f"gw-{secrets.token_urlsafe(32)}" for _ in range(2))
    url = f"sqlite+aiosqlite:///{data / 'metering.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "REDIS_URL"))},
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_TENANT_KEYS": f"acme:{key},beta:{other}",
        "GATEWAY_ADMIN_KEY": f"gw-admin-{secrets.token_urlsafe(32)}",
        "GATEWAY_METERING_DATABASE_URL": url,
        "GATEWAY_JOBS_LEASE_S": "3",
        "GATEWAY_JOBS_RETRY_BACKOFF_S": "0.2",
        "GATEWAY_JOBS_WORKERS": str(workers),
        "GATEWAY_JOBS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GATEWAY_JOBS_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        yield JobsSuite(suite, key, url, other, env["GATEWAY_ADMIN_KEY"])
    finally:
        suite.stop()


def chat_body(model: str, text: str = "hello there") -> dict[str, Any]:
    """A chat completions request."""
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def submit(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    """POST /v1/jobs."""
    return await client.post("/v1/jobs", json=body, headers={"authorization": f"Bearer {key}"})


async def get_job(client: httpx.AsyncClient, key: str, job_id: str) -> httpx.Response:
    """GET /v1/jobs/{id}."""
    return await client.get(f"/v1/jobs/{job_id}", headers={"authorization": f"Bearer {key}"})


async def wait_for_status(
    client: httpx.AsyncClient, key: str, job_id: str, statuses: set[str], timeout_s: float = 60.0
) -> dict[str, Any]:
    """The job once its status is one of ``statuses`` (polled; the router may be restarting)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            response = await get_job(client, key, job_id)
            if response.status_code == 200:
                last = response.json()
                if last["status"] in statuses:
                    return last
        except httpx.HTTPError:
            pass  # the edge or router is restarting
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout_s}s: {last}")
