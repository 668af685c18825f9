"""The fake upstream's stream shapes and the bench client's bounded series, on loopback (no suite)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from bench import client
from bench.fake_upstream import FakeUpstream, StreamShape, stream_shape
from suite.supervisor import free_port


def test_the_model_name_shapes_the_stream() -> None:
    assert stream_shape("bench-e23-p20", 8, 0.0) == StreamShape(19, 0.02)
    assert stream_shape("bench-e23-p20", 8, 0.0).events == 23
    assert stream_shape("bench", 8, 0.0) == StreamShape(8, 0.0)
    assert stream_shape("slow-20", 8, 0.0) == StreamShape(20, 0.05)
    assert stream_shape("gpt-4o-mini-e2", 8, 0.0) == StreamShape(0, 0.0)  # never fewer than the framing
    assert stream_shape("bench-e23-p20x", 8, 0.0) == StreamShape(19, 0.0)  # whole segments only


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def session() -> AsyncIterator[client.aiohttp.ClientSession]:
    async with client.session(timeout_s=10) as s:
        yield s


def _target(upstream: FakeUpstream, path: str = "/chat/completions") -> client.Target:
    return client.Target("direct", f"{upstream.base_url}{path}", {}, "")


async def test_a_stream_arrives_whole_with_its_first_event_timed(
    upstream: FakeUpstream, session: client.aiohttp.ClientSession
) -> None:
    series = await client.run(client.stream(session, _target(upstream), "bench-e23-p0"), 3, 1, 10)
    assert series.errors == 0 and len(series.samples) == 3
    assert [s.events for s in series.samples] == [23, 23, 23]
    assert all(s.first_event_s is not None and s.first_event_s <= s.latency_s for s in series.samples)


async def test_a_paced_stream_takes_its_pace(upstream: FakeUpstream, session: client.aiohttp.ClientSession) -> None:
    series = await client.run(client.stream(session, _target(upstream), "bench-e6-p20"), 1, 1, 10)
    (sample,) = series.samples
    assert sample.events == 6
    assert sample.first_event_s is not None
    assert sample.latency_s - sample.first_event_s >= 5 * 0.02 * 0.95  # five gaps after the first event


async def test_a_series_stops_at_its_count_and_at_its_time(
    upstream: FakeUpstream, session: client.aiohttp.ClientSession
) -> None:
    counted = await client.run(client.unary(session, _target(upstream), "bench"), 25, 4, 10)
    assert len(counted.samples) == 25 and counted.errors == 0
    start = time.perf_counter()
    timed = await client.run(client.stream(session, _target(upstream), "bench-e50-p20"), 10**6, 2, 0.3)
    assert time.perf_counter() - start < 3  # the in-flight 1 s streams finish, nothing new starts
    assert 1 <= len(timed.samples) <= 4


async def test_failures_are_counted_with_the_first_reason(
    upstream: FakeUpstream, session: client.aiohttp.ClientSession
) -> None:
    series = await client.run(client.unary(session, _target(upstream, "/nowhere"), "bench"), 3, 1, 10)
    assert series.errors == 3 and not series.samples
    assert "HTTP 404" in series.first_error
