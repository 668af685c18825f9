"""AI Gateway's README (seed 004), its documented requests run against the real processes.

Only host, port and key are substituted: the curl of its quick start, ``/health``, the documented
response headers, ``/api/costs``, ``/api/costs/:key`` and ``/api/prompt-log?limit=100``.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from suite.supervisor import Suite
from tests.servers import free_port

pytestmark = pytest.mark.e2e

T = TypeVar("T")

ROUTE_KEY = "sk-route-" + secrets.token_hex(8)
"""The upstream key of the environment's model routes (AI Gateway's ``AI_GATEWAY_API_KEY``)."""

CONFIG = """
providers:
  byok:
    type: openai_compatible
    base_url: UPSTREAM
    api_key_env: BYOK_UPSTREAM_KEY_UNSET
    forward_client_key: true
models:
  byok-model:
    deployments:
      - provider: byok
        model: byok-plain
  gpt-3.5-turbo:
    deployments:
      - provider: mock
        model: gpt-3.5-turbo
        input_usd_per_million: 1.0
        output_usd_per_million: 2.0
prompt_log:
  redact_patterns: ["ACME-[0-9]{4}"]
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
    config.write_text(CONFIG.replace("UPSTREAM", upstream.base_url))
    key, other_key, admin_key = (f"gw-{secrets.token_urlsafe(32)}" for _ in range(3))
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "AI_GATEWAY_"))},
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_TENANT_KEYS": f"acme:{key},beta:{other_key}",
        "GATEWAY_ADMIN_KEY": admin_key,
        "AI_GATEWAY_PROMPT_LOGGING": "true",
        # The README's model routing, with the local upstream on loopback.
        "AI_GATEWAY_MODEL_ROUTES": f"llama:{upstream.base_url}",
        "AI_GATEWAY_API_KEY": ROUTE_KEY,
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


def _get(gateway: Gateway, path: str, key: str | None = None) -> httpx.Response:
    return httpx.get(f"{gateway.url}{path}", headers={"Authorization": f"Bearer {key or gateway.key}"}, timeout=30)


def _poll(check: Callable[[], T | None], timeout_s: float = 20.0) -> T:
    """``check()``'s first non-None answer; usage reaches the ledger asynchronously (the spool)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(0.1)


def _own_costs(gateway: Gateway, key: str, at_least: int) -> dict[str, Any] | None:
    response = _get(gateway, "/api/costs", key)
    assert response.status_code == 200, response.text
    rows = response.json()["data"]
    return rows[0] if rows and sum(r["requests"] for r in rows) >= at_least else None


def test_api_costs_per_key_and_tenant_isolation(gateway: Gateway) -> None:
    """``/api/costs`` lists the caller's keys with numbers; ``/api/costs/:key`` of another tenant is 404;
    an admin key sees every tenant."""
    for key in (gateway.key, gateway.other_key):
        assert _chat(gateway, key=key).status_code == 200
    mine = _poll(lambda: _own_costs(gateway, gateway.key, 1))
    theirs = _poll(lambda: _own_costs(gateway, gateway.other_key, 1))
    assert mine["tenant"] == "acme" and theirs["tenant"] == "beta"
    for field in ("requests", "prompt_tokens", "completion_tokens", "total_tokens"):
        assert isinstance(mine[field], int) and mine[field] > 0
    assert isinstance(mine["cost_usd"], float) and mine["cost_usd"] > 0
    listed = _get(gateway, "/api/costs").json()["data"]
    assert {row["tenant"] for row in listed} == {"acme"}

    one = _get(gateway, f"/api/costs/{mine['key']}")
    assert one.status_code == 200, one.text
    assert one.json()["key"] == mine["key"] and one.json()["requests"] >= 1
    refused = _get(gateway, f"/api/costs/{theirs['key']}")
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"]["message"]
    assert _get(gateway, "/api/costs/key_does_not_exist").status_code == 404

    everyone = _get(gateway, "/api/costs", gateway.admin_key)
    assert everyone.status_code == 200, everyone.text
    tenants = {row["tenant"] for row in everyone.json()["data"]}
    assert {"acme", "beta"} <= tenants
    assert _get(gateway, f"/api/costs/{theirs['key']}", gateway.admin_key).status_code == 200


def _logged(gateway: Gateway, key: str, marker: str) -> list[dict[str, Any]] | None:
    response = _get(gateway, "/api/prompt-log?limit=100", key)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries if any(marker in e["request_preview"] for e in entries) else None


def test_prompt_log_redacts_before_storage_and_stays_in_its_tenant(gateway: Gateway) -> None:
    """``/api/prompt-log?limit=100`` shows previews and token counts; keys, bearer tokens and the
    configured pattern are gone from the metering database itself; another tenant sees none of it."""
    marker = f"marker-{secrets.token_hex(4)}"
    upstream_secret = "sk-proj-" + secrets.token_hex(16)
    bearer = "Bearer " + secrets.token_hex(12)
    text = f"{marker} my key is {upstream_secret}, header {bearer}, order ACME-1234"
    assert _chat(gateway, messages=[{"role": "user", "content": text}]).status_code == 200
    entries = _poll(lambda: _logged(gateway, gateway.key, marker))
    entry = next(e for e in entries if marker in e["request_preview"])
    assert entry["model"] == "gpt-3.5-turbo"
    assert entry["prompt_tokens"] > 0 and entry["completion_tokens"] > 0
    assert entry["response_preview"]
    assert entry["time"].endswith("Z")
    preview = entry["request_preview"]
    assert upstream_secret not in preview and bearer not in preview and "ACME-1234" not in preview
    assert "[REDACTED]" in preview

    database = gateway.data / "metering.db"
    with sqlite3.connect(database) as connection:
        stored = " ".join(
            row[0] + row[1] for row in connection.execute("SELECT request_json, response_text FROM prompt_logs")
        )
    assert marker in stored
    assert upstream_secret not in stored and bearer.split()[1] not in stored and "ACME-1234" not in stored
    spool = (gateway.data / "router-usage-spool.db").read_bytes()
    assert upstream_secret.encode() not in spool

    other = _get(gateway, "/api/prompt-log?limit=100", gateway.other_key).json()["data"]
    assert not any(marker in e["request_preview"] for e in other)


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
def test_prompt_log_limit_is_bounded(gateway: Gateway, limit: str) -> None:
    """A limit outside 1..1000 is a 400 naming ``limit``."""
    response = _get(gateway, f"/api/prompt-log?limit={limit}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "limit"


def test_model_routes_from_the_environment(gateway: Gateway) -> None:
    """``AI_GATEWAY_MODEL_ROUTES="llama:http://127.0.0.1:…/v1"`` sends ``llama`` to that upstream, with
    ``AI_GATEWAY_API_KEY``; the answer is the upstream's."""
    before = gateway.upstream.stats.requests
    response = _chat(gateway, model="llama")
    assert response.status_code == 200, response.text
    assert gateway.upstream.stats.requests == before + 1
    assert gateway.upstream.stats.last_body["model"] == "llama"
    assert gateway.upstream.stats.last_authorization == f"Bearer {ROUTE_KEY}"
    assert response.headers["x-gateway-provider"] == "route-llama"


def test_bring_your_own_key_reaches_the_upstream_and_nothing_else(gateway: Gateway) -> None:
    """A provider with forward_client_key and no key sends the client's X-Upstream-Authorization
    upstream (the gateway key stays in Authorization); the key is in no log, spool or ledger."""
    client_key = "sk-client-" + secrets.token_hex(16)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gateway.key}", "X-Upstream-Authorization": f"Bearer {client_key}"},
        json={"model": "byok-model", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert gateway.upstream.stats.last_body["model"] == "byok-plain"
    assert gateway.upstream.stats.last_authorization == f"Bearer {client_key}"

    streamed = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gateway.key}", "X-Upstream-Authorization": f"Bearer {client_key}"},
        json={"model": "byok-model", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        timeout=30,
    )
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("[DONE]"), streamed.text

    missing = _chat(gateway, model="byok-model")
    assert missing.status_code == 503, missing.text
    assert "X-Upstream-Authorization" in missing.json()["error"]["message"]

    _poll(lambda: _logged(gateway, gateway.key, "Hi"))
    stored = [path for path in gateway.data.rglob("*") if path.is_file()]
    assert any(path.parent == gateway.suite.log_dir for path in stored)  # the processes' logs are read too
    for path in stored:
        assert client_key.encode() not in path.read_bytes(), path
