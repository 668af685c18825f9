"""Async jobs end to end through the edge: submit → poll → the sync call's body; list; cancel;
tenant isolation; refused at submit exactly as the sync call; revoked key; signed webhook."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from gateway.metering.v1 import metering_pb2
from tests.edge.openai_schema import errors as spec_errors
from tests.faults.jobs_harness import (
    WEBHOOK_SECRET,
    JobsSuite,
    chat_body,
    get_job,
    jobs_suite,
    submit,
    wait_for_status,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsSuite]:
    with jobs_suite(tmp_path_factory.mktemp("jobs-suite"), latency_ms=300) as running:
        yield running


@pytest.fixture
async def client(gateway: JobsSuite) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.suite.edge_url, timeout=30) as http:
        yield http


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    # The mock's completion id and creation time differ between any two calls.
    return {k: v for k, v in body.items() if k not in ("id", "created")}


async def test_a_job_succeeds_with_the_sync_calls_body_and_is_listed(
    gateway: JobsSuite, client: httpx.AsyncClient
) -> None:
    body = chat_body("slow", "say something nice")
    accepted = await submit(client, gateway.key, {"request": body})
    assert accepted.status_code == 200, accepted.text
    job = accepted.json()
    assert job["id"].startswith("job_") and job["status"] == "queued" and job["result"] is None
    assert job["attempts"] == 0 and job["max_attempts"] == 3 and job["created_at"] > 0

    done = await wait_for_status(client, gateway.key, job["id"], {"succeeded", "failed"})
    sync = await client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {gateway.key}"})
    assert done["status"] == "succeeded", done
    assert (
        done["attempts"] == 1 and done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]
    )
    assert done["result"]["object"] == "chat.completion"
    assert spec_errors("CreateChatCompletionResponse", done["result"]) == []
    assert _comparable(done["result"]) == _comparable(sync.json())

    # The ledger has the job's run under the job's id as request id: exactly one successful row.
    rows = await gateway.wait_for_ledger(job["id"], 1, timeout_s=20)
    assert [(r.request_id, r.outcome) for r in rows] == [(job["id"], "SUCCESS")]

    listed = await client.get("/v1/jobs", params={"limit": 100}, headers={"authorization": f"Bearer {gateway.key}"})
    assert listed.status_code == 200
    assert job["id"] in [j["id"] for j in listed.json()["data"]]


async def test_a_responses_job_answers_a_stored_response_it_can_continue(
    gateway: JobsSuite, client: httpx.AsyncClient
) -> None:
    headers = {"authorization": f"Bearer {gateway.key}"}
    accepted = await submit(client, gateway.key, {"request": {"model": "mock:demo", "input": "Run async"}})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["format"] == "responses"
    done = await wait_for_status(client, gateway.key, accepted.json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    result = done["result"]
    # The synchronous route's shape: a `response` (valid per the spec), stored for the tenant.
    assert result["object"] == "response" and result["id"].startswith("resp_") and result["status"] == "completed"
    assert spec_errors("Response", result) == []
    assert result["output"][0]["content"][0]["text"]
    stored = await client.get(f"/v1/responses/{result['id']}", headers=headers)
    assert stored.status_code == 200, stored.text
    assert stored.json()["output"] == result["output"]
    # A second job continues the first one's conversation, as previous_response_id does synchronously.
    follow = {"model": "mock:demo", "input": "And then?", "previous_response_id": result["id"]}
    second = await submit(client, gateway.key, {"request": follow})
    finished = await wait_for_status(client, gateway.key, second.json()["id"], {"succeeded", "failed"})
    assert finished["status"] == "succeeded", finished
    assert finished["result"]["previous_response_id"] == result["id"]
    # Another tenant's id is not found for a job either: it fails, naming the parameter.
    foreign = {"model": "mock:demo", "input": "x", "previous_response_id": result["id"]}
    theirs = await submit(client, gateway.other_key, {"request": foreign})
    failed = await wait_for_status(client, gateway.other_key, theirs.json()["id"], {"succeeded", "failed"})
    assert failed["status"] == "failed" and failed["error"]["param"] == "previous_response_id", failed


async def test_list_is_newest_first_and_paginates(gateway: JobsSuite, client: httpx.AsyncClient) -> None:
    ids = []
    for _ in range(3):
        response = await submit(client, gateway.other_key, {"request": chat_body("mock:demo")})
        ids.append(response.json()["id"])
        await asyncio.sleep(0.01)
    headers = {"authorization": f"Bearer {gateway.other_key}"}
    first = (await client.get("/v1/jobs", params={"limit": 2}, headers=headers)).json()
    assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = (await client.get("/v1/jobs", params={"limit": 2, "after": first["last_id"]}, headers=headers)).json()
    assert rest["data"][0]["id"] == ids[0]
    bad = await client.get("/v1/jobs", params={"limit": 0}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


async def test_tenants_never_see_or_cancel_each_others_jobs(gateway: JobsSuite, client: httpx.AsyncClient) -> None:
    job = (await submit(client, gateway.key, {"request": chat_body("slow")})).json()
    theirs = await get_job(client, gateway.other_key, job["id"])
    unknown = await get_job(client, gateway.other_key, "job_doesnotexist")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["message"].replace(job["id"], "X") == unknown.json()["error"]["message"].replace(
        "job_doesnotexist", "X"
    )
    cancel = await client.post(f"/v1/jobs/{job['id']}/cancel", headers={"authorization": f"Bearer {gateway.other_key}"})
    assert cancel.status_code == 404
    listed = await client.get(
        "/v1/jobs", params={"limit": 100}, headers={"authorization": f"Bearer {gateway.other_key}"}
    )
    assert job["id"] not in [j["id"] for j in listed.json()["data"]]
    mine = await wait_for_status(client, gateway.key, job["id"], {"succeeded"})
    assert mine["status"] == "succeeded"


def _admitted(spool: Path, request_id: str) -> bool:
    """Whether the router's usage spool holds an event (the intent written at admission) of ``request_id``."""
    if not spool.exists():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=5)) as db:
        payloads = db.execute("SELECT payload FROM usage_spool").fetchall()
    return any(metering_pb2.UsageEvent.FromString(payload).request_id == request_id for (payload,) in payloads)


async def test_cancel_a_queued_or_running_job(gateway: JobsSuite, client: httpx.AsyncClient) -> None:
    headers = {"authorization": f"Bearer {gateway.key}"}
    job = (await submit(client, gateway.key, {"request": chat_body("slow")})).json()
    await wait_for_status(client, gateway.key, job["id"], {"running"})
    # "running" is set when a worker claims the job, before the run's admission; a cancel then
    # would rightly leave no ledger row (nothing reached a provider). Cancel once it was admitted:
    # its intent is in the router's usage spool.
    spool = gateway.suite.data_dir / "router-usage-spool.db"
    deadline = time.monotonic() + 20
    while not _admitted(spool, job["id"]):
        assert time.monotonic() < deadline, "the job's run was never admitted"
        await asyncio.sleep(0.05)
    cancelled = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The run was cancelled inside the router: the ledger records it as cancelled, never as a success.
    rows = await gateway.wait_for_ledger(job["id"], 1, timeout_s=20)
    assert [r.outcome for r in rows] == ["CANCELLED"]
    await asyncio.sleep(0.5)
    after = (await get_job(client, gateway.key, job["id"])).json()
    assert after["status"] == "cancelled" and after["result"] is None
    again = await client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
    assert again.json()["status"] == "cancelled"


async def test_refused_at_submit_answers_the_sync_error_and_queues_nothing(
    gateway: JobsSuite, client: httpx.AsyncClient
) -> None:
    headers = {"authorization": f"Bearer {gateway.key}"}
    before = (await client.get("/v1/jobs", params={"limit": 100}, headers=headers)).json()["data"]
    cases = [
        {**chat_body("priced", "x " * 200), "gateway": {"max_cost_usd": 0.000001}},
        chat_body("no-such-model-anywhere"),
    ]
    for body in cases:
        sync = await client.post("/v1/chat/completions", json=body, headers=headers)
        job = await submit(client, gateway.key, {"request": body})
        assert sync.status_code >= 400
        assert job.status_code == sync.status_code, job.text
        expected = sync.json()["error"]
        got = job.json()["error"]
        assert (
            got["code"] == expected["code"]
            and got["type"] == expected["type"]
            and got["message"] == expected["message"]
        )
        assert (
            got["param"] == (f"request.{expected['param']}" if expected["param"] else None)
            or got["param"] == expected["param"]
        )
    bad_key = await submit(client, "gw-not-a-key", {"request": chat_body("slow")})
    assert bad_key.status_code == 401
    after = (await client.get("/v1/jobs", params={"limit": 100}, headers=headers)).json()["data"]
    assert [j["id"] for j in after] == [j["id"] for j in before]


async def test_bad_submissions_name_their_param(gateway: JobsSuite, client: httpx.AsyncClient) -> None:
    cases = [
        ({"request": {"model": "slow", "input": 5}}, "request.input"),
        ({"request": {"model": "slow", "input": "hi", "stream": True}}, "request.stream"),
        ({"request": {"model": "slow"}}, "request"),
        ({"request": {**chat_body("slow"), "stream": True}}, "request.stream"),
        ({"request": {"model": "slow", "messages": "nope"}}, "request.messages"),
        ({"request": chat_body("slow"), "webhook": {"url": "ftp://example.com/x"}}, "webhook.url"),
        ({"request": chat_body("slow"), "surprise": 1}, "surprise"),
    ]
    for body, param in cases:
        response = await submit(client, gateway.key, body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param, (body, response.text)


async def test_a_key_revoked_while_its_job_waits_fails_the_job(gateway: JobsSuite, client: httpx.AsyncClient) -> None:
    admin = {"authorization": f"Bearer {gateway.admin_key}"}
    created = await client.post(
        "/admin/v1/keys", json={"tenant_id": "acme", "name": "short-lived", "scopes": ["chat"]}, headers=admin
    )
    assert created.status_code == 200, created.text
    secret, key_id = created.json()["secret"], created.json()["key"]["key_id"]
    # Keep the workers busy so the new job is still queued when the key is revoked.
    blockers = [(await submit(client, gateway.key, {"request": chat_body("slow")})).json()["id"] for _ in range(4)]
    job = (await submit(client, secret, {"request": chat_body("slow")})).json()
    revoked = await client.post(f"/admin/v1/keys/{key_id}:revoke", json={}, headers=admin)
    assert revoked.status_code == 200, revoked.text
    ended = await wait_for_status(client, gateway.key, job["id"], {"succeeded", "failed"})
    assert ended["status"] == "failed" and ended["attempts"] == 1
    assert ended["error"]["type"] == "permission_error"
    for blocker in blockers:
        await wait_for_status(client, gateway.key, blocker, {"succeeded"})


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


async def test_the_completion_webhook_is_delivered_signed(gateway: JobsSuite, client: httpx.AsyncClient) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job = (await submit(client, gateway.key, {"request": chat_body("slow"), "webhook": {"url": url}})).json()
        assert job["webhook"] == {"url": url}
        done = await wait_for_status(client, gateway.key, job["id"], {"succeeded"})
        async with asyncio.timeout(20):
            while not _Receiver.received:
                await asyncio.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    headers, body = _Receiver.received[0]
    parts = dict(item.split("=", 1) for item in headers["x-gateway-signature"].split(","))
    expected = hmac.new(WEBHOOK_SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    posted = json.loads(body)
    assert posted["id"] == job["id"] and posted["status"] == "succeeded"
    assert _comparable(posted["result"]) == _comparable(done["result"])
