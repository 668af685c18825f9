"""Unified Model Gateway's README, its Responses API curl examples (#1, #2, #8, #9, #10), verbatim but
for host, port and key, against the real processes started with ``MOCK_MODE=true`` (the fixture of
test_unified_model_gateway). Examples #3 and #4 (``/v1/jobs``) are the jobs tests'."""

from __future__ import annotations

import json

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


def test_example_9_reaches_the_planner_which_under_mock_mode_has_no_anthropic(running: Running) -> None:
    # Under MOCK_MODE every model is served by the mock, so the planner (issue 8's rule, applied
    # exactly as on chat completions) finds no deployment among allow_providers=["anthropic"] and
    # says so, naming the constraint: it reached the router. The same body routes to Anthropic
    # when MOCK_MODE is off and an Anthropic key is configured.
    response = _post(running, "/v1/responses", EXAMPLE_9)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "gateway.constraints.routing.allow_providers"
    without = _post(running, "/v1/responses", EXAMPLE_9.replace('"anthropic"]', '"anthropic","mock"]'))
    assert without.status_code == 200, without.text
    assert "strategy=reliability" in without.headers["x-gateway-route"]
