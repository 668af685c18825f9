"""Unified Model Gateway's README, the curl examples issue 8 covers, against the real processes.

The seed (``../shared/seeds/003_5e011df051f28cac.txt``) says "Replace ``<API_KEY>`` with your key or
run with ``MOCK_MODE=true``": here both, so every model it names (``gpt-4.1``,
``claude-3.5-sonnet``) is served by the mock while still authenticated, limited and metered. Its
key is one of its own format (``sk_test_`` + 32 hex digits), configured through
``GATEWAY_TENANT_KEYS``. Examples #5 (``GET /v1/models``), #6 (``GET /v1/usage?from&to``) and #7
(``POST /v1/chat.completions``) run with only host, port and key substituted; #1-4 and #8-10
(``/v1/responses``, ``/v1/jobs``) are in test_unified_model_gateway_responses. Its routing
constraints also exist on chat completions under the ``gateway`` extension, and are checked here.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from suite.supervisor import Suite
from tests.servers import free_port

pytestmark = pytest.mark.e2e

RPM = 10
# Its key format: "sk_test_" + crypto.randomBytes(16).toString('hex').
API_KEY = "sk_test_" + secrets.token_hex(16)
# A second tenant, to spend its minute without disturbing the other tests.
LIMITED_KEY = "sk_test_" + secrets.token_hex(16)
# Example #7's body, verbatim.
CHAT_BODY = '{"model":"gpt-4.1","messages":[{"role":"user","content":"Hi"}]}'
METERED_WITHIN_S = 15.0


@dataclass
class Running:
    """The suite started with ``MOCK_MODE=true`` and the seed-format key."""

    suite: Suite

    def get(self, path: str, key: str = API_KEY) -> httpx.Response:
        """A curl ``GET`` with the README's one header."""
        return httpx.get(f"{self.suite.edge_url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def chat(self, body: str, key: str = API_KEY) -> httpx.Response:
        """Example #7's curl: ``POST /v1/chat.completions`` with its two headers."""
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        return httpx.post(f"{self.suite.edge_url}/v1/chat.completions", headers=headers, content=body, timeout=30)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The suite on free ports, as its README's user would run it: MOCK_MODE and one key."""
    data = tmp_path_factory.mktemp("unified-model-gateway")
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "MOCK_MODE"))
        },
        "MOCK_MODE": "true",
        "GATEWAY_TENANT_KEYS": f"tenant_demo:{API_KEY},tenant_limited:{LIMITED_KEY}",
        "GATEWAY_RATE_LIMIT_RPM": str(RPM),
    }
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        yield Running(suite)
    finally:
        suite.stop()


def _wait_for(check: Callable[[], bool], what: str, within_s: float = METERED_WITHIN_S) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {within_s}s")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_key_of_its_format_from_gateway_tenant_keys_is_accepted(running: Running) -> None:
    assert running.get("/v1/models").status_code == 200
    refused = running.get("/v1/models", key="sk_test_" + "0" * 32)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["type"]


def test_list_models(running: Running) -> None:
    # Example #5.
    response = running.get("/v1/models")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert body["data"] and all(m["object"] == "model" and m["id"] for m in body["data"])


@pytest.mark.parametrize("model", ["gpt-4.1", "claude-3.5-sonnet"])
def test_openai_compatible_chat_completion_is_served_by_the_mock(running: Running, model: str) -> None:
    # Example #7 (and the same with example #9's model): no provider key anywhere, MOCK_MODE serves it.
    response = running.chat(CHAT_BODY.replace("gpt-4.1", model))
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-provider"] == "mock"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == model
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # Still limited: the limit headers of the tenant's key.
    assert response.headers["x-ratelimit-limit-requests"] == str(RPM)


def test_mock_mode_still_needs_a_key(running: Running) -> None:
    response = httpx.post(
        f"{running.suite.edge_url}/v1/chat.completions",
        headers={"Content-Type": "application/json"},
        content=CHAT_BODY,
        timeout=30,
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"]


def test_routing_constraints_on_chat_completions(running: Running) -> None:
    # Example #8's constraints, on the OpenAI-compatible route under the gateway extension.
    body: dict[str, Any] = {
        **json.loads(CHAT_BODY),
        "gateway": {"constraints": {"routing": {"strategy": "cost"}}},
    }
    response = running.chat(json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-provider"] == "mock"
    unknown = running.chat(json.dumps({**body, "gateway": {"constraints": {"routing": {"strategy": "fastest?"}}}}))
    assert unknown.status_code == 400, unknown.text


def test_usage_aggregation_of_an_empty_range_is_an_empty_list(running: Running) -> None:
    # Example #6, verbatim: nothing was sent in 2024, and the README's request has no group_by.
    empty = running.get("/v1/usage?from=2024-01-01T00:00:00Z&to=2024-12-31T23:59:59Z")
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"rows": []}


def test_usage_aggregation_of_an_empty_range_grouped_is_an_empty_list(running: Running) -> None:
    # Example #6 grouped by model: no group, no row.
    for query in (
        "from=2024-01-01T00:00:00Z&to=2024-12-31T23:59:59Z",
        "from=2024-01-01T00:00:00Z&to=2024-01-01T00:00:00Z",
    ):
        empty = running.get(f"/v1/usage?{query}&group_by=GROUP_BY_MODEL")
        assert empty.status_code == 200, empty.text
        assert empty.json() == {"rows": []}


def test_usage_aggregation_reports_a_request_with_numbers(running: Running) -> None:
    # Example #6 over a range that includes now, after example #7: the request is there.
    assert running.chat(CHAT_BODY).status_code == 200
    now = datetime.now(UTC)
    today = f"/v1/usage?from={_rfc3339(now - timedelta(days=1))}&to={_rfc3339(now + timedelta(days=1))}"

    def rows(query: str) -> list[dict[str, Any]]:
        response = running.get(query)
        assert response.status_code == 200, response.text
        return list(response.json()["rows"])

    _wait_for(lambda: any(r.get("requests", 0) >= 1 for r in rows(today)), "the request in /v1/usage")
    (row,) = rows(today)
    # Numbers as numbers (int64 is a JSON string in proto3 JSON; not here).
    for name in ("requests", "prompt_tokens", "completion_tokens", "cost_micro_usd", "errors"):
        assert type(row[name]) is int, (name, row)
    assert row["requests"] >= 1 and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert row["cost_micro_usd"] == 0  # the mock is free
    # Grouped by model, the request is under the name the client sent.
    by_model = {r["group"]: r for r in rows(f"{today}&group_by=GROUP_BY_MODEL")}
    assert by_model["gpt-4.1"]["requests"] >= 1, by_model


def test_mock_mode_is_still_limited(running: Running) -> None:
    answers = [running.chat(CHAT_BODY, key=LIMITED_KEY) for _ in range(RPM + 1)]
    assert [a.status_code for a in answers] == [200] * RPM + [429], [a.text for a in answers[-2:]]
    assert answers[-1].json()["error"]["type"] == "rate_limit_exceeded"
    assert answers[-1].headers["retry-after"]
