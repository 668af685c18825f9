"""LLM Proxy Gateway's README with its Gemini CLI steps, every service a real process.

The seed (``../shared/seeds/001_04b67c6050f2083f.txt``): seed a user and gateway key, log in with
Google at ``/ui/gemini``, then ``POST /v1/chat/completions`` with ``"model": "gemini-2.5-pro"``,
which its ``gemini-`` prefix routes to the Gemini CLI run with that user's login. Here Google is
the loopback fake OAuth server (it verifies the PKCE verifier) and ``gemini`` the fake CLI on the
provider's ``executable`` path, which records the login it was given. There is no global login:
only the tenant's own credential, stored encrypted by auth, chosen by the providers service, can
log the CLI in.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from suite.supervisor import Suite
from tests.fake_oauth import FakeOAuthServer
from tests.servers import free_port

pytestmark = pytest.mark.e2e

# auth's ResolveCredentials cache_ttl_seconds (5 s) plus slack for a loaded machine.
CREDENTIAL_VISIBLE_WITHIN_S = 15.0
FAKE_CLI = Path(__file__).parents[1] / "providers" / "fake_gemini_cli" / "gemini"

CONFIG = """
providers:
  gemini-cli:
    type: gemini-cli
    executable: {cli}
    timeout_s: 30
    env:
      FAKE_GEMINI_RECORD: {record}
limits:
  requests_per_minute: 10000
"""


@dataclass
class Running:
    """The suite, the fake Google, the operator's CLI environment and the fake CLI's record."""

    suite: Suite
    oauth: FakeOAuthServer
    cli_env: dict[str, str]
    record: Path

    def gateway(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run ``gateway ARGV…`` as an operator would."""
        script = Path(sys.executable).parent / "gateway"
        return subprocess.run(
            [str(script), *argv], env=self.cli_env, capture_output=True, text=True, timeout=60, check=False
        )

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the fake CLI so far."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("llm-proxy-gemini-cli")
    record = data / "gemini-runs.jsonl"
    config = data / "gateway.yaml"
    config.write_text(CONFIG.format(cli=FAKE_CLI, record=record))
    oauth = FakeOAuthServer().start()
    admin_key = f"gw-{secrets.token_urlsafe(32)}"
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "GEMINI_", "MOCK_MODE"))},
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_ADMIN_KEY": admin_key,
        "GATEWAY_GEMINI_OAUTH_CLIENT_ID": oauth.state.client_id,
        "GATEWAY_GEMINI_OAUTH_CLIENT_SECRET": oauth.state.client_secret,
        "GATEWAY_GEMINI_OAUTH_AUTHORIZE_URL": f"{oauth.base_url}/authorize",
        "GATEWAY_GEMINI_OAUTH_TOKEN_URL": f"{oauth.base_url}/token",
    }
    suite = Suite(data_dir=data, ports=ports, env=env)
    try:
        suite.start()
        cli_env = {**env, "GATEWAY_AUTH_ADDR": f"127.0.0.1:{ports['auth']}", "GATEWAY_TLS_DIR": str(suite.tls_dir)}
        yield Running(suite, oauth, cli_env, record)
    finally:
        suite.stop()
        oauth.stop()


@pytest.fixture(scope="module")
def gateway_api_key(running: Running) -> str:
    """README step 2, "Create a user + gateway API key", with our CLI."""
    made = running.gateway("tenants", "create", "proxy-user", "--name", "LLM Proxy Gateway user")
    assert made.returncode == 0, made.stderr
    made = running.gateway("keys", "create", "--tenant", "proxy-user", "--name", "seed")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def logged_in(running: Running, gateway_api_key: str) -> dict[str, Any]:
    """README step 4, "Login (Gemini OAuth)": open /ui/gemini, paste the key, consent at Google."""
    with httpx.Client(base_url=running.suite.edge_url, timeout=30) as browser:
        page = browser.get("/ui/gemini")
        assert page.status_code == 200 and 'action="/ui/gemini/login"' in page.text
        started = browser.post("/ui/gemini/login", data={"api_key": gateway_api_key}, follow_redirects=False)
        assert started.status_code == 303, started.text
        at_google = httpx.get(started.headers["location"], follow_redirects=False, timeout=10)
        assert at_google.status_code == 302, at_google.text
        back = urlsplit(at_google.headers["location"])
        assert back.path == "/ui/gemini/callback"
        done = browser.get("/ui/gemini/callback", params={k: v[0] for k, v in parse_qs(back.query).items()})
    assert done.status_code == 200, done.text
    assert running.oauth.state.pkce_verified == 1
    issued = running.oauth.state.issued[-1]
    assert issued["access_token"] not in done.text and issued["refresh_token"] not in done.text
    return issued


def _chat(running: Running, key: str, **extra: Any) -> httpx.Response:
    # README step 5, but for host, port and key.
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "Hello from the gateway!"}], **extra}
    return httpx.post(
        f"{running.suite.edge_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=body,
        timeout=60,
    )


def _first_chat_after_login(running: Running, key: str) -> httpx.Response:
    """The providers service caches a tenant's "no credential" answer for auth's cache TTL (5 s):
    a login is used within that, so poll for it (bounded) rather than assume it is instant."""
    deadline = time.monotonic() + CREDENTIAL_VISIBLE_WITHIN_S
    while True:
        response = _chat(running, key)
        if response.status_code != 400 or time.monotonic() > deadline:
            return response
        time.sleep(0.25)


def test_without_a_login_the_cli_is_not_run(running: Running, gateway_api_key: str) -> None:
    refused = _chat(running, gateway_api_key)
    assert refused.status_code == 400, refused.text
    assert "/ui/gemini" in refused.json()["error"]["message"]
    assert running.runs() == []


def test_the_login_is_stored_encrypted_as_the_tenants_credential(running: Running, logged_in: dict[str, Any]) -> None:
    listed = running.gateway("credentials", "list", "--tenant", "proxy-user")
    assert listed.returncode == 0, listed.stderr
    assert "gemini-cli" in listed.stdout and logged_in["access_token"][-4:] in listed.stdout
    assert logged_in["access_token"] not in listed.stdout
    auth_db = (running.suite.data_dir / "auth.db").read_bytes()
    for secret in (logged_in["access_token"], logged_in["refresh_token"]):
        assert secret.encode() not in auth_db


def test_chat_with_gemini_2_5_pro_runs_the_cli_logged_in_as_the_user(
    running: Running, gateway_api_key: str, logged_in: dict[str, Any]
) -> None:
    before = len(running.runs())
    response = _first_chat_after_login(running, gateway_api_key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "gemini-2.5-pro"
    assert body["choices"][0]["message"]["content"]
    assert response.headers["x-gateway-provider"] == "gemini-cli"
    (run,) = running.runs()[before:]
    assert run["creds"]["access_token"] == logged_in["access_token"]
    assert run["creds"]["refresh_token"] == logged_in["refresh_token"]
    assert logged_in["access_token"] not in json.dumps(run["argv"])


def test_a_stream_runs_the_cli_logged_in_as_the_user(
    running: Running, gateway_api_key: str, logged_in: dict[str, Any]
) -> None:
    before = len(running.runs())
    with httpx.stream(
        "POST",
        f"{running.suite.edge_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gateway_api_key}"},
        json={"model": "gemini-2.5-pro", "stream": True, "messages": [{"role": "user", "content": "Stream please"}]},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    text = "".join(
        choice["delta"].get("content") or ""
        for line in lines[:-1]
        for choice in json.loads(line.removeprefix("data: "))["choices"]
    )
    assert text
    (run,) = running.runs()[before:]
    assert run["creds"]["access_token"] == logged_in["access_token"]
