"""The rate limit service SIGKILLed under load and restarted with empty counters.

Its in-memory counters die with it. A limiter that came back with zero would admit a whole new
day's worth of requests: the restarted service must rebuild the day window from the ledger (here on
a real PostgreSQL) before it admits anything, while the requests that arrive during the outage are
refused with a 503 (never a 500) and reach no provider. What the clients were served is compared
with the ledger: every served request once, and the day limit held across the restart.

Requests the dead limiter admitted may still be running when the new one starts: their usage
reaches the ledger after it, so the new limiter admits nothing until its rebuild's grace has let
them in (a router reconnects to its port before it is ready, and is refused meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from tests.faults.usage_harness import UsageSuite, duplicates, send_load, usage_suite
from tests.servers import free_port

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


class HeldUpstream:
    """An OpenAI-compatible upstream that holds every chat completion until released."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived = 0
        self.released = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        self.arrived += 1
        await self.released.wait()
        body = {
            "id": "chatcmpl-held",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "plain",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def start(self) -> None:
        """Serve on loopback."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Release what is held and stop."""
        self.released.set()
        if self._runner is not None:
            await self._runner.cleanup()


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s:.0f}s"
        await asyncio.sleep(0.05)


HELD = 4
SMALL_DAY_LIMIT = 10


async def test_requests_in_flight_when_the_limiter_died_count_against_the_restarted_one(
    tmp_path: Path, ledger_url: str
) -> None:
    upstream = HeldUpstream()
    await upstream.start()
    limits = f"  requests_per_day: {SMALL_DAY_LIMIT}\n"
    try:
        with usage_suite(tmp_path / "suite", ledger_url, limits=limits, held_upstream=upstream.base_url) as gw:
            prefix = f"rl-held-{secrets.token_hex(4)}-"
            ids = [f"{prefix}{i:04d}" for i in range(60)]
            held = asyncio.create_task(send_load(gw.suite.edge_url, gw.key, ids[:HELD], model="held", concurrency=HELD))

            async def all_arrived() -> bool:
                return upstream.arrived == HELD

            await _until(all_arrived, "every held request at the upstream (admitted)")
            gw.kill("ratelimit")
            gw.spawn("ratelimit")

            async def listens() -> bool:
                return await asyncio.to_thread(gw.listens, "ratelimit")

            await _until(listens, "the new limiter listening")
            # The new limiter's server is up and its rebuild has begun. Requests sent now reach it
            # as soon as the router has reconnected (within a second): none may be admitted. The
            # held requests finish half a second in, well within the rebuild's 2 s grace.
            probes: dict[str, int] = {}
            first_after: dict[str, int] = {}
            probe_ids = iter(ids[HELD:])
            started = time.monotonic()
            while not await asyncio.to_thread(gw.suite._serving("ratelimit")):
                assert time.monotonic() - started < 30, "the new limiter never became ready"
                if not upstream.released.is_set() and time.monotonic() - started >= 0.5:
                    upstream.released.set()
                request_id = next(probe_ids)
                status = (await send_load(gw.suite.edge_url, gw.key, [request_id], concurrency=1)).statuses[request_id]
                if status == 200:
                    # Ready between the check and the probe: it counts with the requests after.
                    first_after = {request_id: status}
                    break
                probes[request_id] = status
                await asyncio.sleep(0.1)
            upstream.released.set()  # if the limiter was ready sooner: it did not wait for them
            assert (await held).statuses == {i: 200 for i in ids[:HELD]}, "admitted before the kill, served after"
            assert set(probes.values()) <= {503}, f"nothing admitted before the rebuild: {probes}"

            # Now the day is what the ledger says, the held requests included: 6 more of 10 (a
            # limiter that summed the ledger before they finished would admit 10).
            after: dict[str, int] = dict(first_after)
            for request_id in probe_ids:
                status = (await send_load(gw.suite.edge_url, gw.key, [request_id], concurrency=1)).statuses[request_id]
                after[request_id] = status
                if status == 429:
                    break
                if status == 503:
                    await asyncio.sleep(0.1)  # the router is still reconnecting: nothing was admitted
            served_after = [i for i, status in after.items() if status == 200]
            assert list(after.values())[-1] == 429, f"the day limit was reached: {after}"
            assert len(served_after) == SMALL_DAY_LIMIT - HELD, f"the held requests counted: {after}"

            rows = await gw.wait_for_ledger(prefix, SMALL_DAY_LIMIT, settle_s=1.0)
            assert duplicates(rows) == 0
            successes = {row.request_id for row in rows if row.outcome == "SUCCESS"}
            assert successes == set(ids[:HELD]) | set(served_after)
    finally:
        await upstream.stop()
