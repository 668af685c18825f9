"""Jobs survive their router: SIGKILL the router (its workers are tasks in it) mid-job, restart it,
and every job ends exactly once with the right result and exactly one successful ledger row.

Ten jobs on a mock that takes 3 s, five workers: when the kill lands, five jobs are inside a
provider call (their usage intent is on disk) and five are queued. After the restart the killed
runs' leases (3 s) run out, their jobs are claimed again, and everything succeeds. The ledger then
holds, per job, one SUCCESS row and, for each job that was killed mid-call, one ROUTER_RESTARTED
row (the intent the restarted router recovered from its spool) — nothing more, nothing less.
Run on the SQLite queue (embedded default) and on the Redis queue.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from services.router.usage_intent import RESTARTED_ERROR_CODE
from tests.faults.jobs_harness import chat_body, get_job, jobs_suite, submit, wait_for_status
from tests.faults.usage_harness import LedgerRow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

JOBS = 10
WORKERS = 5


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_every_job_ends_once_with_one_success_row_after_a_router_kill(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("redis_url") if engine == "redis" else None
    with jobs_suite(tmp_path / "suite", redis_url=redis_url, latency_ms=3000, workers=WORKERS) as gateway:
        async with httpx.AsyncClient(base_url=gateway.suite.edge_url, timeout=30) as client:
            ids = []
            for i in range(JOBS):
                accepted = await submit(client, gateway.key, {"request": chat_body("slow", f"task number {i}")})
                assert accepted.status_code == 200, accepted.text
                ids.append(accepted.json()["id"])

            # Kill once every worker is inside its provider call.
            deadline = time.monotonic() + 20
            while True:
                statuses = {i: (await get_job(client, gateway.key, i)).json()["status"] for i in ids}
                running = {i for i, s in statuses.items() if s == "running"}
                if len(running) == WORKERS or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert len(running) == WORKERS, statuses
            # Admission and the usage intent take milliseconds; the provider takes 3 s.
            await asyncio.sleep(0.5)
            gateway.kill("router")
            gateway.restart("router")

            ended = [
                await wait_for_status(client, gateway.key, i, {"succeeded", "failed", "cancelled"}, 90) for i in ids
            ]

        for index, job in enumerate(ended):
            assert job["status"] == "succeeded", job
            assert job["result"]["choices"][0]["message"]["content"] == f"Mock reply to: task number {index}"
            assert job["attempts"] == (2 if job["id"] in running else 1), job

        expected_rows = 2 * len(running) + (JOBS - len(running))
        # Settled for a second: a late duplicate would show up, not be missed.
        all_rows = await gateway.wait_for_ledger("job_", expected_rows, timeout_s=30, settle_s=1.0)
        rows: dict[str, list[LedgerRow]] = {}
        for row in all_rows:
            rows.setdefault(row.request_id, []).append(row)
        assert set(rows) == set(ids)
        for job_id, job_rows in rows.items():
            outcomes = sorted((r.outcome, r.error_code) for r in job_rows)
            if job_id in running:
                assert outcomes == [("ERROR", RESTARTED_ERROR_CODE), ("SUCCESS", "")], (job_id, outcomes)
            else:
                assert outcomes == [("SUCCESS", "")], (job_id, outcomes)
        assert len(all_rows) == expected_rows
        assert len({r.event_id for r in all_rows}) == expected_rows
        print(f"jobs-kill[{engine}]: {JOBS} jobs, {len(running)} killed mid-call, ledger rows {len(all_rows)}")
