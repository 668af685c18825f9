"""End to end: the built-in price table makes budgets bite, unpriced models are marked (and refused
where a tenant asks), discovery agrees with chat admission, and a response's model routes back.

Its own suite: OpenAI itself is configured here, pointed at the fake upstream, with no price in
the configuration, so every dollar counted comes from the genai-prices dataset.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from bench.fake_upstream import FakeUpstream
from suite.supervisor import Suite
from tests.servers import free_port

pytestmark = pytest.mark.e2e

CONFIG = """
providers:
  openai:
    type: openai
    base_url: {upstream}
    api_key_env: FAKE_UPSTREAM_KEY
  local:
    type: openai_compatible
    base_url: {upstream}
    api_key_env: FAKE_UPSTREAM_KEY
models:
  chat-alias:
    deployments:
      - provider: mock
        model: demo
  local-llama:
    deployments:
      - provider: local
        model: llama
limits:
  requests_per_minute: 10000
"""

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


@dataclass
class Priced:
    suite: Suite
    key: str
    admin_key: str
    clients: list[openai.OpenAI] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.suite.edge_url

    def client(self, key: str | None = None) -> openai.OpenAI:
        # Kept, to be closed when the suite stops: a dropped client leaks its socket.
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.key, max_retries=0)
        self.clients.append(client)
        return client

    def admin(self, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.admin_key}"}, json=body, timeout=10
        )

    def tenant_key(self, policy: dict[str, Any], budget_micro_usd: int) -> str:
        """A key of a new tenant with ``policy`` and a daily spend budget on the key."""
        tenant_id = f"t-{secrets.token_hex(4)}"
        created = self.admin("POST", "/admin/v1/tenants", {"tenant": {"tenant_id": tenant_id, "policy": policy}})
        assert created.status_code == 200, created.text
        quota = {"unit": "UNIT_COST_MICRO_USD", "window": "WINDOW_DAY", "limit": budget_micro_usd}
        key = self.admin(
            "POST",
            "/admin/v1/keys",
            {
                "tenant_id": tenant_id,
                "name": "budgeted",
                "limits": {"quotas": [quota, {"unit": "UNIT_REQUESTS", "window": "WINDOW_MINUTE", "limit": 10000}]},
            },
        )
        assert key.status_code == 200, key.text
        return str(key.json()["secret"])


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Priced]:
    data = tmp_path_factory.mktemp("priced")
    upstream = FakeUpstream(free_port())
    upstream.start()
    config = data / "gateway.yaml"
    config.write_text(CONFIG.format(upstream=upstream.base_url))
    key, admin_key = (f"gw-{secrets.token_urlsafe(32)}" for _ in range(2))
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))},
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_TENANT_KEYS": f"acme:{key}",
        "GATEWAY_ADMIN_KEY": admin_key,
        "FAKE_UPSTREAM_KEY": "upstream-secret",
    }
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        running = Priced(suite, key, admin_key)
        yield running
        for client in running.clients:
            client.close()
    finally:
        suite.stop()
        upstream.stop()


def test_a_budget_limits_gpt_4o_mini_priced_only_by_the_dataset(priced: Priced) -> None:
    # 100 micro-USD a day. Each request reserves about 33 (its prompt ceiling at $0.15/M, 50 answer
    # tokens at $0.60/M) and settles at 5 (the fake's 9 + 6 tokens). Priced at $0, none would stop.
    client = priced.client(priced.tenant_key({}, budget_micro_usd=100))
    served = 0
    for _ in range(40):
        try:
            answer = client.chat.completions.create(model="openai:gpt-4o-mini", messages=HELLO, max_tokens=50)
        except openai.RateLimitError as refused:
            assert refused.code == "insufficient_quota", refused.body
            break
        assert answer.model == "openai:gpt-4o-mini"
        served += 1
    else:
        raise AssertionError("40 requests to openai:gpt-4o-mini passed a 100 micro-USD budget")
    assert 1 <= served <= 20


def test_a_tenant_may_refuse_unpriced_models_under_a_budget(priced: Priced) -> None:
    strict = priced.client(priced.tenant_key({"refuse_unpriced": True}, budget_micro_usd=1_000_000))
    for model in ("local:llama", "local-llama"):
        with pytest.raises(openai.PermissionDeniedError) as denied:
            strict.chat.completions.create(model=model, messages=HELLO, max_tokens=5)
        assert denied.value.code == "policy_violation"
        assert f"`{model}`" in denied.value.message
    # Priced (by the dataset) and free (the mock) models are served; so is the unpriced one for
    # a tenant that did not ask to refuse it.
    assert strict.chat.completions.create(model="openai:gpt-4o-mini", messages=HELLO, max_tokens=5).choices
    assert strict.chat.completions.create(model="mock:demo", messages=HELLO, max_tokens=5).choices
    lenient = priced.client(priced.tenant_key({}, budget_micro_usd=1_000_000))
    assert lenient.chat.completions.create(model="local:llama", messages=HELLO, max_tokens=5).choices
    # Discovery follows: the refusing tenant is not offered what it would be refused.
    listed = {m.id for m in strict.models.list()}
    assert "openai:gpt-4o-mini" in listed and "local:llama" not in listed and "local-llama" not in listed


def test_models_mark_prices_and_unpriced(priced: Priced) -> None:
    headers = {"Authorization": f"Bearer {priced.key}"}
    mini = httpx.get(f"{priced.url}/v1/models/openai:gpt-4o-mini", headers=headers, timeout=10)
    assert mini.status_code == 200, mini.text
    assert mini.json()["priced"] is True
    assert mini.json()["pricing"] == {"input_usd_per_million": 0.15, "output_usd_per_million": 0.6}
    llama = httpx.get(f"{priced.url}/v1/models/local:llama", headers=headers, timeout=10).json()
    assert llama["id"] == "local:llama" and llama["priced"] is False and llama["pricing"] is None
    free = httpx.get(f"{priced.url}/v1/models/chat-alias", headers=headers, timeout=10).json()
    assert free["priced"] is True and free["pricing"] == {"input_usd_per_million": 0.0, "output_usd_per_million": 0.0}


def test_discovery_matches_admission(priced: Priced) -> None:
    client = priced.client()
    listed = [m.id for m in client.models.list()]
    # Aliases, deployments, the default and OpenAI's catalogue from the dataset.
    assert {"chat-alias", "local-llama", "mock:demo", "local:llama", "mock:gateway-demo"} <= set(listed)
    assert {"openai:gpt-4o-mini", "openai:gpt-4o"} <= set(listed)
    for model in listed:
        assert client.models.retrieve(model).id == model
        answer = client.chat.completions.create(model=model, messages=HELLO, max_tokens=5)
        assert answer.model == model
    # Not listed, yet chat accepts it: retrieve answers too.
    assert "mock:never-listed" not in listed
    assert client.models.retrieve("mock:never-listed").id == "mock:never-listed"
    assert client.chat.completions.create(model="mock:never-listed", messages=HELLO).choices
    # Neither listed nor accepted: both 404.
    for model in ("nosuchprovider:model", "no-such-alias-xyz"):
        assert model not in listed
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(model)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=model, messages=HELLO)


def test_the_response_model_routes_back(priced: Priced) -> None:
    client = priced.client()
    for requested in ("mock:demo", "chat-alias", "openai:gpt-4o-mini"):
        first = client.chat.completions.create(model=requested, messages=HELLO, max_tokens=5)
        assert first.model == requested
        again = client.chat.completions.create(model=first.model, messages=HELLO, max_tokens=5)
        assert again.model == requested
        chunks = list(client.chat.completions.create(model=first.model, messages=HELLO, max_tokens=5, stream=True))
        assert chunks and {c.model for c in chunks} == {requested}
