"""The real suite as processes (five gRPC services and the edge) plus a fake upstream, once per session."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from bench.fake_upstream import FakeUpstream
from suite.supervisor import Suite
from tests.servers import free_port

CONFIG = """
providers:
  fake:
    type: openai_compatible
    base_url: {upstream}
    api_key_env: FAKE_UPSTREAM_KEY
  stubbed:
    type: anthropic
    stub: true
models:
  upstream:
    deployments:
      - provider: fake
        model: plain
  fast:
    deployments:
      - provider: mock
        model: fast-demo
        input_usd_per_million: 1.0
        output_usd_per_million: 2.0
  choose:
    deployments:
      - provider: mock
        model: dear
        input_usd_per_million: 5.0
        output_usd_per_million: 15.0
      - provider: mock
        model: cheap
        input_usd_per_million: 0.5
        output_usd_per_million: 1.0
router:
  max_attempts: 2
  retry_backoff_s: 0.01
  attempt_timeout_s: 3
edge:
  max_body_bytes: 65536
limits:
  requests_per_minute: 10000
"""


@dataclass
class Gateway:
    """The running suite, its keys and the fake upstream behind the ``fake`` provider."""

    suite: Suite
    upstream: FakeUpstream
    key: str
    other_key: str
    admin_key: str
    clients: list[openai.OpenAI] = field(default_factory=list)
    """Every SDK client handed out, closed when the suite stops (a dropped one leaks its socket)."""

    @property
    def url(self) -> str:
        """The edge base URL."""
        return self.suite.edge_url

    def client(self, key: str | None = None, **kwargs: object) -> openai.OpenAI:
        """The official SDK pointed at the edge."""
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.key, max_retries=0, **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Start the suite on free ports with its own data folder; stop it at the end of the session."""
    data: Path = tmp_path_factory.mktemp("suite")
    upstream = FakeUpstream(free_port())
    upstream.start()
    config = data / "gateway.yaml"
    config.write_text(CONFIG.format(upstream=upstream.base_url))
    key, other_key, admin_key = (f"gw-{secrets.token_urlsafe(32)}" for _ in range(3))
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))},
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_TENANT_KEYS": f"acme:{key},beta:{other_key}",
        "GATEWAY_ADMIN_KEY": admin_key,
        "FAKE_UPSTREAM_KEY": "upstream-secret",
    }
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        running = Gateway(suite, upstream, key, other_key, admin_key)
        yield running
        for client in running.clients:
            client.close()
    finally:
        suite.stop()
        upstream.stop()
