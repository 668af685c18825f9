"""The Gemini CLI provider through the edge, every service a real process, ``gemini`` the fake CLI.

``"model": "gemini-2.5-pro"`` routes by its prefix to the configured ``gemini-cli`` provider (as in
the LLM Proxy Gateway seed). Until the per-request credential selection lands, the CLI is logged in
with the global login (``GEMINI_CLI_OAUTH_CREDS_FILE``); the tenant's own token set reaches the
adapter through ``services.providers.adapters.gemini_cli.oauth_tokens_var`` instead.

:func:`start_gemini_suite` is reusable: the seed's full test (seed a key, log in at ``/ui/gemini``
against the fake OAuth server, chat) needs only extra environment on top of it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from suite.supervisor import Suite, free_port

pytestmark = pytest.mark.e2e

FAKE_CLI = Path(__file__).parents[1] / "providers" / "fake_gemini_cli" / "gemini"
GLOBAL_ACCESS = "ya29.global-login-of-the-operator"

CONFIG = """
providers:
  gemini-cli:
    type: gemini-cli
    executable: {cli}
    timeout_s: 30
    max_concurrency: 4
    env:
      FAKE_GEMINI_RECORD: {record}
      FAKE_GEMINI_DELAY_S: "1.0"
limits:
  requests_per_minute: 10000
"""


@dataclass
class GeminiSuite:
    """The running suite, a tenant key, and the runs the fake CLI recorded."""

    suite: Suite
    key: str
    record: Path

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the fake CLI so far."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]


def start_gemini_suite(data: Path, extra_env: Mapping[str, str] | None = None) -> GeminiSuite:
    """The suite with a ``gemini-cli`` provider on the fake CLI, logged in with a global login file."""
    record = data / "gemini-runs.jsonl"
    config = data / "gateway.yaml"
    config.write_text(CONFIG.format(cli=FAKE_CLI, record=record))
    creds = data / "oauth_creds.json"
    creds.write_text(json.dumps({"access_token": GLOBAL_ACCESS, "refresh_token": "1//g", "expiry_date": 4102444800000}))
    key = f"gw-{secrets.token_urlsafe(32)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "GEMINI_"))}
    env.update(
        {
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_TENANT_KEYS": f"acme:{key}",
            "GEMINI_CLI_OAUTH_CREDS_FILE": str(creds),
            **(extra_env or {}),
        }
    )
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    return GeminiSuite(suite, key, record)


@pytest.fixture(scope="module")
def gemini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeminiSuite]:
    running = start_gemini_suite(tmp_path_factory.mktemp("gemini-cli"))
    try:
        yield running
    finally:
        running.suite.stop()


@pytest.fixture(scope="module")
def sdk(gemini: GeminiSuite) -> Iterator[openai.OpenAI]:
    """One SDK client for the module, closed at its end (a dropped client leaks its sockets)."""
    with openai.OpenAI(base_url=f"{gemini.suite.edge_url}/v1", api_key=gemini.key, max_retries=0) as client:
        yield client


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "no such process"


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_chat_with_gemini_2_5_pro_is_served_by_the_cli(gemini: GeminiSuite, sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="gemini-2.5-pro", messages=[{"role": "user", "content": "Hello from the gateway!"}]
    )
    completion = raw.parse()
    assert raw.headers["x-gateway-provider"] == "gemini-cli"
    assert completion.choices[0].message.content == "Hello from fake gemini: Hello from the gateway!"
    assert completion.usage is not None and completion.usage.completion_tokens == 8
    run = gemini.runs()[-1]
    assert run["argv"][1:5] == ["--model", "gemini-2.5-pro", "--output-format", "json"]
    assert run["creds"]["access_token"] == GLOBAL_ACCESS and GLOBAL_ACCESS not in json.dumps(run["argv"])
    assert run["env"]["GOOGLE_GENAI_USE_GCA"] == "true" and "GATEWAY_TENANT_KEYS" not in run["env"]


def test_stream_with_gemini_2_5_flash_arrives_in_chunks_with_usage(gemini: GeminiSuite, sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "stream this"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from fake gemini: System: Be brief. User: stream this"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 8
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    assert gemini.runs()[-1]["argv"][1:5] == ["--model", "gemini-2.5-flash", "--output-format", "stream-json"]


def test_a_client_leaving_mid_stream_kills_the_cli_and_its_children(gemini: GeminiSuite) -> None:
    before = len(gemini.runs())
    question = [{"role": "user", "content": "please leave early before the end of it"}]
    body = {"model": "gemini-2.5-pro-slow", "messages": question, "stream": True}
    headers = {"authorization": f"Bearer {gemini.key}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{gemini.suite.edge_url}/v1/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                break  # the first content chunk: the CLI is mid-answer
        (run,) = gemini.runs()[before:]
        assert not gone(run["pid"]) and not gone(run["child_pid"]), (line, _stat(run["pid"]), gemini.runs()[before:])
    # The connection is closed: the edge cancels the router, the router the providers call, and
    # the adapter kills the CLI's process group long before its 12 s answer would have finished
    # (and its child, which sleeps for 120 s).
    deadline = time.monotonic() + 5
    while not (gone(run["pid"]) and gone(run["child_pid"])):
        assert time.monotonic() < deadline, "the gemini CLI outlived the client"
        time.sleep(0.05)
    assert not Path(run["cwd"]).parent.exists()  # the run's private home and workspace


def test_an_expired_login_reaches_the_client_as_an_error_without_any_token(gemini: GeminiSuite) -> None:
    answer = httpx.post(
        f"{gemini.suite.edge_url}/v1/chat/completions",
        json={"model": "gemini-2.5-pro-auth-fail", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {gemini.key}"},
        timeout=30,
    )
    assert answer.status_code == 401, answer.text
    error = answer.json()["error"]
    assert "invalid_grant" in error["message"] and GLOBAL_ACCESS not in answer.text
