"""Usage is never lost and never doubled: faults injected into the real processes under bounded load,
then what clients were served compared with what the ledger holds.

Every request carries a unique client request id, so "in the ledger exactly once" is checked per
request; the ledger's key is the router's event id, so duplicates would show as one request id on
several rows. Each test prints its figures (served / in ledger / duplicates) for the closing report.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.router.usage_intent import RESTARTED_ERROR_CODE
from tests.faults.usage_harness import (
    RestartablePostgres,
    UsageSuite,
    duplicates,
    restartable_postgres,
    send_load,
    usage_suite,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsageSuite]:
    with usage_suite(tmp_path_factory.mktemp("usage-suite")) as running:
        yield running


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


def _prefix(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_requests_sharing_a_client_request_id_are_each_in_the_ledger(gateway: UsageSuite) -> None:
    shared = _prefix("shared")

    result = await send_load(gateway.suite.edge_url, gateway.key, [shared] * 20, concurrency=5)
    rows = await gateway.wait_for_ledger(shared, 20, timeout_s=20)

    assert len(result.statuses) == 1 and result.statuses[shared] == 200  # one id, twenty answers
    assert len(rows) == 20
    assert len({row.event_id for row in rows}) == 20


async def test_metering_down_well_past_the_old_drop_point_loses_nothing(gateway: UsageSuite) -> None:
    prefix = _prefix("outage")
    outage_s = 15.0
    gateway.kill("metering")
    down_at = time.time()
    try:
        result = await send_load(gateway.suite.edge_url, gateway.key, _ids(prefix, 300), concurrency=10)
        load_end = time.time()
        await asyncio.sleep(max(0.0, down_at + outage_s - time.time()))  # the outage lasts its full length
    finally:
        await asyncio.to_thread(gateway.restart, "metering")
    restarted_at = time.time()
    rows = await gateway.wait_for_ledger(prefix, len(result.served))

    print(
        f"\nmetering down {outage_s:.0f}s: served {len(result.served)} / in ledger {len(rows)} "
        f"/ duplicates {duplicates(rows)}"
    )
    assert len(result.served) == 300
    assert {row.request_id for row in rows} == result.served
    assert duplicates(rows) == 0
    # Delayed events keep the time they were received, so they land in the window they belong to.
    assert load_end < restarted_at
    assert all(down_at - 1 <= row.time <= load_end for row in rows)


async def test_a_router_killed_under_load_loses_nothing_once_restarted(gateway: UsageSuite) -> None:
    prefix = _prefix("router-kill")
    ids = _ids(prefix, 200)
    halfway = asyncio.Event()
    # Slow answers keep requests in flight (admitted, intent spooled) when the router dies.
    load = asyncio.create_task(
        send_load(
            gateway.suite.edge_url,
            gateway.key,
            ids,
            model="slow",
            concurrency=20,
            on_done=halfway,
            done_after=100,
        )
    )
    await asyncio.wait_for(halfway.wait(), 60)
    gateway.kill("router")
    result = await load
    await asyncio.to_thread(gateway.restart, "router")
    # The restarted router ships its predecessor's spool: final events and recovered intents.
    rows = await gateway.wait_for_ledger(prefix, len(result.served), settle_s=2.0)
    recovered = [row for row in rows if row.error_code == RESTARTED_ERROR_CODE]

    print(
        f"\nrouter SIGKILL: sent {len(ids)}, served {len(result.served)} / in ledger {len(rows)} "
        f"(of which {len(recovered)} recovered intents) / duplicates {duplicates(rows)}"
    )
    assert 0 < len(result.served) < len(ids)
    in_ledger = {row.request_id for row in rows}
    assert result.served <= in_ledger
    assert in_ledger <= set(ids)
    assert recovered, "requests in flight at the kill are metered from their intents"
    assert duplicates(rows) == 0


async def test_metering_killed_mid_batch_loses_nothing(gateway: UsageSuite) -> None:
    prefix = _prefix("metering-kill")
    ids = _ids(prefix, 300)
    halfway = asyncio.Event()
    load = asyncio.create_task(
        send_load(gateway.suite.edge_url, gateway.key, ids, concurrency=10, on_done=halfway, done_after=150)
    )
    await asyncio.wait_for(halfway.wait(), 60)
    # Batches are flowing now: wait until some of this load is in the ledger, then kill mid-stream.
    await gateway.wait_for_ledger(prefix, 50, timeout_s=20)
    gateway.kill("metering")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(gateway.restart, "metering")
    result = await load
    rows = await gateway.wait_for_ledger(prefix, len(result.served))

    print(f"\nmetering SIGKILL: served {len(result.served)} / in ledger {len(rows)} / duplicates {duplicates(rows)}")
    assert len(result.served) == len(ids)
    assert {row.request_id for row in rows} == result.served
    assert duplicates(rows) == 0


@pytest.fixture
def postgres() -> Iterator[RestartablePostgres]:
    with restartable_postgres() as server:
        yield server


@pytest.mark.postgres
async def test_postgres_restarted_under_load_loses_nothing(postgres: RestartablePostgres, tmp_path: Path) -> None:
    prefix = _prefix("pg-restart")
    ids = _ids(prefix, 300)
    with usage_suite(tmp_path / "suite", metering_url=postgres.url) as gateway:
        halfway = asyncio.Event()
        load = asyncio.create_task(
            send_load(gateway.suite.edge_url, gateway.key, ids, concurrency=10, on_done=halfway, done_after=100)
        )
        await asyncio.wait_for(halfway.wait(), 60)
        # Down for longer than the old metering queue's retries lasted (about 3 s).
        await asyncio.to_thread(postgres.restart, 8.0)
        result = await load
        rows = await gateway.wait_for_ledger(prefix, len(result.served))
        assert gateway.suite.dead() == []

    print(
        f"\nPostgreSQL down 8s and restarted: served {len(result.served)} / in ledger {len(rows)} "
        f"/ duplicates {duplicates(rows)}"
    )
    assert len(result.served) == len(ids)
    assert {row.request_id for row in rows} == result.served
    assert duplicates(rows) == 0


def test_a_second_router_on_the_same_spool_fails_fast(gateway: UsageSuite) -> None:
    env = gateway.suite.process_env()
    env["GATEWAY_ROUTER_LISTEN"] = "127.0.0.1:0"
    second = subprocess.run(
        [sys.executable, "-m", "services.router"], env=env, capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )

    assert second.returncode != 0
    assert "is in use by another process" in second.stderr
    assert "GATEWAY_METERING_SPOOL_PATH" in second.stderr
    assert gateway.suite.dead() == []  # the first router is untouched
