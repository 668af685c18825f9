"""AI Gateway's README (seed 004), its documented requests run against the real processes.

Only host, port and key are substituted: the curl of its quick start, ``/health``, the documented
response headers, ``/api/costs``, ``/api/costs/:key`` and ``/api/prompt-log?limit=100``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from suite.supervisor import Suite
from tests.servers import free_port

pytestmark = pytest.mark.e2e

CONFIG = """
models:
  gpt-3.5-turbo:
    deployments:
      - provider: mock
        model: gpt-3.5-turbo
        input_usd_per_million: 1.0
        output_usd_per_million: 2.0
prompt_log:
  redact_patterns: ["ACME-[0-9]{{4}}"]
limits:
  requests_per_minute: 10000
"""


@dataclass
class Gateway:
    """The running suite, its tenant keys and the fake upstream."""

    suite: Suite
    upstream: FakeUpstream
    key: str
    other_key: str
    admin_key: str
    data: Path

    @property
    def url(self) -> str:
        """The edge base URL (AI Gateway's ``http://localhost:3002``)."""
        return self.suite.edge_url


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The suite started as AI Gateway's users would set it up (its environment variables)."""
    data: Path = tmp_path_factory.mktemp("ai-gateway")
    upstream = FakeUpstream(free_port())
    upstream.start()
    config = data / "gateway.yaml"
    config.write_text(CONFIG)
    key, other_key, admin_key = (f"gw-{secrets.token_urlsafe(32)}" for _ in range(3))
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "AI_GATEWAY_"))},
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_TENANT_KEYS": f"acme:{key},beta:{other_key}",
        "GATEWAY_ADMIN_KEY": admin_key,
        "AI_GATEWAY_PROMPT_LOGGING": "true",
    }
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        yield Gateway(suite, upstream, key, other_key, admin_key, data)
    finally:
        suite.stop()
        upstream.stop()


def _chat(
    gateway: Gateway, path: str = "/v1/chat/completions", key: str | None = None, **body: object
) -> httpx.Response:
    payload = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hi"}], **body}
    return httpx.post(
        f"{gateway.url}{path}",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key or gateway.key}"},
        content=json.dumps(payload),
        timeout=30,
    )


def test_quick_start_curl_and_documented_headers(gateway: Gateway) -> None:
    """The quick start's curl answers, with X-Request-Id, X-RateLimit-*, X-Cost-USD and a response time."""
    response = _chat(gateway)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
    headers = response.headers
    assert headers["x-request-id"]
    assert int(headers["x-ratelimit-remaining"]) == int(headers["x-ratelimit-remaining-requests"])
    assert int(headers["x-ratelimit-reset-ms"]) >= 0
    assert float(headers["x-response-time-ms"]) > 0
    usage = response.json()["usage"]
    expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1_000_000
    assert float(headers["x-cost-usd"]) == pytest.approx(expected, abs=1e-6)
    assert float(headers["x-cost-usd"]) > 0


def test_chat_dot_completions_alias_json_and_stream(gateway: Gateway) -> None:
    """Unified Model Gateway's ``/v1/chat.completions`` is ``/v1/chat/completions``, JSON and SSE."""
    plain = _chat(gateway, "/v1/chat.completions")
    assert plain.status_code == 200, plain.text
    assert plain.json()["object"] == "chat.completion"
    streamed = _chat(gateway, "/v1/chat.completions", stream=True, stream_options={"include_usage": True})
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["usage"]["cost_usd"] > 0
    assert "x-response-time-ms" in streamed.headers


def test_stream_usage_chunk_parses_with_the_openai_sdk(gateway: Gateway) -> None:
    """The cost extension in the final usage chunk does not stop the official SDK from parsing it."""
    import openai

    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="gpt-3.5-turbo",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.total_tokens > 0
    assert (usage.model_extra or {})["cost_usd"] > 0


def test_health(gateway: Gateway) -> None:
    """``GET /health`` answers 200."""
    response = httpx.get(f"{gateway.url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
