"""GPT Gateway (MVP)'s README, run as its users run it, against the real processes.

The seed (``../shared/seeds/000_a2915443a2d9bb66.txt``) documents its setup by environment only:
``GATEWAY_TENANT_KEYS='demo:demo_key'``, ``GATEWAY_DEFAULT_MODEL``, ``GATEWAY_RATE_LIMIT_RPM``
(per tenant) and ``OPENAI_API_KEY``; then two curl requests to ``POST /v1/chat``. Here they run
with only the host, the port and (for the limit check) a second documented ``tenant:key`` entry
substituted; the OpenAI base URL points at the fake upstream, as nothing may leave the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from suite.supervisor import Suite
from tests.servers import free_port

pytestmark = pytest.mark.e2e

RPM = 4
# The seed's curl bodies, verbatim.
MOCK_BODY = '{ "model": "mock:any", "messages": [{"role":"user","content":"Hello"}] }'
OPENAI_BODY = '{ "model": "openai:gpt-4o-mini", "messages": [{"role":"user","content":"Say hi in 5 words."}] }'
# The seed's documented response shape.
RESPONSE_KEYS = {"id", "model", "provider", "usage", "message"}
USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens"}


@dataclass
class Seed:
    """The suite started the seed's way, and its fake OpenAI."""

    suite: Suite
    upstream: FakeUpstream

    def chat(self, body: str, key: str = "demo_key") -> httpx.Response:
        """The seed's curl: POST /v1/chat with its two headers."""
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        return httpx.post(f"{self.suite.edge_url}/v1/chat", headers=headers, content=body, timeout=30)


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    data: Path = tmp_path_factory.mktemp("seed-gpt-gateway-mvp")
    upstream = FakeUpstream(free_port())
    upstream.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    env.update(
        {
            "OPENAI_API_KEY": "sk-seed-openai",
            "OPENAI_BASE_URL": upstream.base_url,
            "GATEWAY_TENANT_KEYS": "demo:demo_key,other:other_key",
            "GATEWAY_DEFAULT_MODEL": "openai:gpt-4o-mini",
            "GATEWAY_RATE_LIMIT_RPM": str(RPM),
        }
    )
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        yield Seed(suite, upstream)
    finally:
        suite.stop()
        upstream.stop()


def _documented(body: dict[str, Any]) -> None:
    assert RESPONSE_KEYS <= set(body), body
    assert set(body["usage"]) == USAGE_KEYS
    assert all(type(body["usage"][k]) is int for k in USAGE_KEYS), body["usage"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert body["message"]["role"] == "assistant"
    assert isinstance(body["message"]["content"], str) and body["message"]["content"]
    assert isinstance(body["id"], str) and body["id"]
    assert type(body.get("created", 0)) is int


def test_the_mock_curl_answers_the_documented_shape(seed: Seed) -> None:
    response = seed.chat(MOCK_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    _documented(body)
    assert body["provider"] == "mock"
    assert body["model"].startswith("mock:")
    assert body["finish_reason"] == "stop"


def test_the_openai_curl_reaches_openai_with_the_servers_key(seed: Seed) -> None:
    before = seed.upstream.stats.requests
    response = seed.chat(OPENAI_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    _documented(body)
    assert body["provider"] == "openai"
    assert body["message"]["content"] == "Hello from the fake upstream."
    assert seed.upstream.stats.requests == before + 1
    assert seed.upstream.stats.last_body["model"] == "gpt-4o-mini"


def test_the_default_model_serves_a_request_without_one(seed: Seed) -> None:
    response = seed.chat('{ "messages": [{"role":"user","content":"Hello"}] }')
    assert response.status_code == 200, response.text
    assert response.json()["provider"] == "openai"
    assert seed.upstream.stats.last_body["model"] == "gpt-4o-mini"


def test_the_rate_limit_is_per_tenant_per_minute(seed: Seed) -> None:
    answers = [seed.chat(MOCK_BODY, key="other_key") for _ in range(RPM + 1)]
    assert [a.status_code for a in answers] == [200] * RPM + [429], [a.text for a in answers]
    refusal = answers[-1]
    assert refusal.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refusal.headers["retry-after"]) >= 1
    # Another tenant's minute is its own.
    assert seed.chat(MOCK_BODY).status_code == 200


def test_a_wrong_key_is_refused_in_openai_shape(seed: Seed) -> None:
    response = seed.chat(MOCK_BODY, key="not_a_key")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
