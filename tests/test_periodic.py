"""gateway_common.periodic: a loop that outlives its failures and stops when asked."""

from __future__ import annotations

import asyncio

import pytest

from gateway_common.periodic import Periodic


async def test_a_failure_does_not_end_the_loop_and_stop_ends_it(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("the first run fails")

    loop = Periodic("flaky", 0.01, flaky)
    loop.start()
    try:
        async with asyncio.timeout(5):
            while runs < 3:
                await asyncio.sleep(0.01)
    finally:
        await loop.stop()
    stopped_at = runs
    await asyncio.sleep(0.05)
    assert runs == stopped_at, "nothing runs after stop()"
    assert any("flaky failed" in r.getMessage() for r in caplog.records)


async def test_run_at_start_runs_before_the_first_interval() -> None:
    ran = asyncio.Event()

    async def mark() -> None:
        ran.set()

    loop = Periodic("eager", 3600, mark, run_at_start=True)
    loop.start()
    try:
        async with asyncio.timeout(5):
            await ran.wait()
    finally:
        await loop.stop()
