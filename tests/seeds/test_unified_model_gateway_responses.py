"""Unified Model Gateway's README, its Responses API and jobs curl examples (#1-4, #8-10), verbatim but
for host, port, key and job id, against the real processes started with ``MOCK_MODE=true`` (the
fixture of test_unified_model_gateway, which covers #5-7)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.edge.openai_schema import errors, stream_event_errors
from tests.seeds.test_unified_model_gateway import API_KEY, Running, running

pytestmark = pytest.mark.e2e

__all__ = ["running"]

HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
EXAMPLE_1 = '{"model":"gpt-4.1","input":{"messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]}]}}'
EXAMPLE_2 = '{"model":"gpt-4.1","input":{"prompt":"Stream please"}}'
EXAMPLE_8 = '{"model":"gpt-4.1","input":{"prompt":"Cheapest"},"constraints":{"routing":{"strategy":"cost"}}}'
EXAMPLE_9 = (
    '{"model":"claude-3.5-sonnet","input":{"prompt":"Only anthropic"},'
    '"constraints":{"routing":{"strategy":"reliability","allow_providers":["anthropic"]}}}'
)
EXAMPLE_3 = '{"request":{"model":"gpt-4.1","input":{"prompt":"Run async"}}}'
EXAMPLE_10 = '{"model":"gpt-4.1","input":{"prompt":"Budget"},"constraints":{"budget":{"max_cost_usd":0.01}}}'


def _post(running: Running, path: str, body: str) -> httpx.Response:
    return httpx.post(f"{running.suite.edge_url}{path}", headers=HEADERS, content=body, timeout=30)


def test_example_1_unified_messages_answer_a_response(running: Running) -> None:
    response = _post(running, "/v1/responses", EXAMPLE_1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert errors("Response", body) == []
    assert body["status"] == "completed" and body["output_text"]
    assert response.headers["x-gateway-provider"] == "mock"


def test_example_2_streams_typed_events(running: Running) -> None:
    with httpx.stream(
        "POST", f"{running.suite.edge_url}/v1/responses/stream", headers=HEADERS, content=EXAMPLE_2, timeout=30
    ) as response:
        assert response.status_code == 200
        data = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert data[0]["type"] == "response.created" and data[-1]["type"] == "response.completed"
    assert all(stream_event_errors(event) == [] for event in data)


def test_examples_8_and_10_carry_their_constraints_to_the_router(running: Running) -> None:
    cost = _post(running, "/v1/responses", EXAMPLE_8)
    assert cost.status_code == 200, cost.text
    assert "strategy=cost" in cost.headers["x-gateway-route"]
    # The mock is free, so the budget holds; tests/edge/test_responses_wire.py shows it parsed as max_cost_usd.
    budget = _post(running, "/v1/responses", EXAMPLE_10)
    assert budget.status_code == 200, budget.text
    assert errors("Response", budget.json()) == []


def test_example_9_reliability_with_a_provider_allowlist_is_served(running: Running) -> None:
    # Under MOCK_MODE the mock answers for Anthropic (claude- routes there), and the allowlist
    # judges it as the provider it stands in for, exactly as it would judge Anthropic itself.
    response = _post(running, "/v1/responses", EXAMPLE_9)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "response" and body["status"] == "completed" and body["output_text"]
    assert "strategy=reliability" in response.headers["x-gateway-route"]
    # The allowlist still narrows: a provider that cannot serve the model is refused, naming it.
    refused = _post(running, "/v1/responses", EXAMPLE_9.replace('"anthropic"]', '"openai"]'))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "gateway.constraints.routing.allow_providers"


def test_examples_3_and_4_a_job_is_created_then_its_status_read(running: Running) -> None:
    created = _post(running, "/v1/jobs", EXAMPLE_3)
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["id"].startswith("job_") and job["status"] in {"queued", "running", "succeeded"}
    # Example 4: GET /v1/jobs/<JOB_ID> with the one header, until the job has run.
    deadline = time.monotonic() + 30
    while True:
        status = httpx.get(
            f"{running.suite.edge_url}/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )
        assert status.status_code == 200, status.text
        body = status.json()
        if body["status"] not in {"queued", "running"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert body["status"] == "succeeded", body
    # Its result is what example 1's synchronous call answers: a Responses API response.
    assert errors("Response", body["result"]) == [] and body["result"]["output_text"]
