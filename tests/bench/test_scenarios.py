"""Every scenario end to end on tiny counts, with the fake upstream standing in for both ways.

The real suite is not started here (seconds, not a minute): this checks that each scenario runs
its series, converts units and fills its table, not what the gateway costs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench import client
from bench.fake_upstream import FakeUpstream
from bench.meter import Meter
from bench.report import Table
from bench.scenarios import SCENARIOS, Context, Settings, rest
from suite.supervisor import free_port

TINY = Settings(
    requests=5,
    saturate_requests=10,
    concurrency=2,
    streams=3,
    stream_events=6,
    paced_streams=2,
    paced_concurrency=2,
    pace_ms=5,
    paced_events=5,
    max_seconds=10,
    soak_requests=5,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(free_port())
    server.start()
    yield server
    server.stop()


async def test_each_scenario_fills_its_table(upstream: FakeUpstream) -> None:
    url = f"{upstream.base_url}/chat/completions"
    direct = client.Target("direct", url, {}, "")
    gateway = client.Target("gateway", url, {"Authorization": "Bearer x"}, "")
    meter = Meter({"edge": os.getpid()}, upstream_pid=os.getpid())
    tables = {name: Table(name, title) for name, (title, _) in SCENARIOS.items()}
    async with client.session(timeout_s=10) as session:
        for mode, first in (("log on", True), ("log off", False)):
            ctx = Context(session, direct, gateway, meter, TINY, mode, measure_direct=first)
            await rest(ctx, tables["unary"], 0.05)
            for name, (_, scenario) in SCENARIOS.items():
                await scenario(ctx, tables[name])
    rows = {name: {r.key: r for r in table.rows} for name, table in tables.items()}
    p50 = rows["unary"]["latency_p50"]
    assert p50.direct is not None and 0 < p50.direct < 1000  # milliseconds, not seconds
    assert set(p50.gateway) == {"log on", "log off"}
    counts = {"unary": 5, "saturated": 10, "stream": 3, "paced": 2, "soak": 5}
    for name, count in counts.items():
        assert rows[name]["done"].gateway == {"log on": count, "log off": count}, name
        assert rows[name]["errors"].gateway == {"log on": 0, "log off": 0}, name
    assert "cpu_per_request.edge" in rows["saturated"] and rows["saturated"]["errors"].direct == 0
    assert (
        rows["stream"]["events_per_stream"].direct == 6 and rows["stream"]["events_per_stream"].gateway["log on"] == 6
    )
    assert rows["paced"]["ttfc_p50"].direct is not None and "cpu_per_event.edge" in rows["paced"]
    assert rows["soak"]["done"].gateway == {"log on": 5, "log off": 5}
    assert all(not table.notes for table in tables.values()), [t.notes for t in tables.values()]
