"""The rate limit service SIGKILLed under load and restarted with empty counters.

Its in-memory counters die with it. A limiter that came back with zero would admit a whole new
day's worth of requests: the restarted service must rebuild the day window from the ledger (here on
a real PostgreSQL) before it admits anything, while the requests that arrive during the outage are
refused with a 503 (never a 500) and reach no provider. What the clients were served is compared
with the ledger: every served request once, and the day limit held across the restart.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.faults.usage_harness import UsageSuite, duplicates, send_load, usage_suite

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DAY_LIMIT = 60
REQUESTS = 200


@pytest.fixture
def ledger_url(postgres_url: str) -> Iterator[str]:
    """A database of this test's own on the session's PostgreSQL (the plain URL operators write)."""
    name = f"rl_faults_{secrets.token_hex(4)}"

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(postgres_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    asyncio.run(run(f"DROP DATABASE {name} WITH (FORCE)"))


@pytest.fixture
def gw(tmp_path: Path, ledger_url: str) -> Iterator[UsageSuite]:
    with usage_suite(tmp_path / "suite", ledger_url, limits=f"  requests_per_day: {DAY_LIMIT}\n") as suite:
        yield suite


async def test_a_killed_limiter_comes_back_with_the_day_rebuilt_from_the_ledger(gw: UsageSuite) -> None:
    prefix = f"rl-{secrets.token_hex(4)}-"
    ids = [f"{prefix}{i:04d}" for i in range(REQUESTS)]
    before, during, after = ids[: DAY_LIMIT // 2], ids[DAY_LIMIT // 2 : DAY_LIMIT // 2 + 20], ids[DAY_LIMIT // 2 + 20 :]
    # Half the day's limit is used, then the limiter dies while requests keep coming.
    halfway = asyncio.Event()
    first = asyncio.create_task(
        send_load(gw.suite.edge_url, gw.key, before, concurrency=4, on_done=halfway, done_after=len(before) - 4)
    )
    await halfway.wait()
    gw.kill("ratelimit")
    outage = await send_load(gw.suite.edge_url, gw.key, during, concurrency=4)
    await asyncio.to_thread(gw.restart, "ratelimit")
    # The router reconnects to the new limiter with gRPC's backoff: until it has, requests are 503
    # (nothing admitted). Probe one request at a time until one is answered by the limiter, so the
    # rest of the load meets it rather than the reconnection (bounded; every probe is accounted).
    probes: dict[str, int] = {}
    remaining = list(after)
    deadline = asyncio.get_running_loop().time() + 30
    while remaining and asyncio.get_running_loop().time() < deadline:
        probe = await send_load(gw.suite.edge_url, gw.key, remaining[:1], concurrency=1)
        probes.update(probe.statuses)
        remaining = remaining[1:]
        if set(probe.statuses.values()) != {503}:
            break
        await asyncio.sleep(0.2)
    rest = await send_load(gw.suite.edge_url, gw.key, remaining, concurrency=4)
    rest.statuses.update(probes)
    statuses_by_id = {**(await first).statuses, **outage.statuses, **rest.statuses}

    statuses = Counter(statuses_by_id.values())
    assert set(statuses) <= {200, 429, 503}, f"no 500s, no dropped connections: {statuses}"
    assert set(outage.statuses.values()) == {503}, f"without a limiter nothing is admitted: {outage.statuses}"
    served = {request_id for request_id, status in statuses_by_id.items() if status == 200}
    # The day's limit held across the restart: a limiter back at zero would serve it all again.
    assert len(served) <= DAY_LIMIT, f"{len(served)} served under a day limit of {DAY_LIMIT}: {statuses}"
    assert Counter(rest.statuses.values())[429] >= 1, "the limit was reached after the restart"

    rows = await gw.wait_for_ledger(prefix, len(served), settle_s=1.0)
    assert duplicates(rows) == 0
    successes = {row.request_id for row in rows if row.outcome == "SUCCESS"}
    assert successes == served, "every served request is in the ledger once, and nothing else succeeded"
    print(f"served {len(served)} of {REQUESTS} (limit {DAY_LIMIT}); statuses {dict(statuses)}; ledger {len(rows)} rows")
