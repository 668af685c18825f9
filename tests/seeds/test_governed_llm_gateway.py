"""Governed LLM Gateway's README, run as its users run it, against the real processes (``Suite``).

The seed (``../shared/seeds/002_21cedc29e39727e9.txt``) documents a keyless ``POST /v1/chat`` with a
``client_id``, the ``default-chat`` alias, stub mode when no provider key is set, a 20 req/min limit
whose 21st request answers ``{"error": {"type": "rate_limit_exceeded", ...}}``, and an append-only
telemetry log. Its curl examples are sent here byte for byte, only the host and port substituted (it
sends no key). Its settings are written the way our config says them: the section it calls
``rate_limit`` is ``anonymous`` (keyless callers, limited per ``client_id``), ``log_file`` is
``telemetry.log_file``, and "stub mode when a key is missing" is ``stub: auto``.

The last tests drive the same setup through ``/v1/chat/completions`` (OpenAI's route, which takes
the top-level ``client_id`` too), for what the seed's examples do not show: a prompt over
``max_prompt_tokens``, callers by address, and separate buckets per client.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from suite.supervisor import Suite
from tests.servers import free_port

pytestmark = pytest.mark.e2e

CONFIG = """
providers:
  openai:
    type: openai
    stub: auto
aliases:
  default-chat: "openai:gpt-4o-mini"
anonymous:
  enabled: true
  limit_by: client_id
  requests_per_minute: 20
max_prompt_tokens: 2000
telemetry:
  log_file: {log_file}
"""

# The README's curl examples: the body of each, exactly as it is sent.
STUB_REQUEST = b"""{
    "client_id": "dev-local-1",
    "model": "default-chat",
    "messages": [
      {"role": "user", "content": "Explain rate limiting in simple terms."}
    ]
  }"""
LOOP_REQUEST = b'{"client_id":"test","model":"default-chat","messages":[{"role":"user","content":"hi"}]}'
JSON = {"Content-Type": "application/json"}


@dataclass
class Governed:
    """The running suite and the telemetry file it writes."""

    suite: Suite
    log_file: Path

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.suite.edge_url}{path}", content=body, headers={**JSON, **(headers or {})}, timeout=30)

    def telemetry(self, request_ids: set[str], timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The telemetry lines of ``request_ids``, once each has one (metering receives usage
        asynchronously, so the lines appear shortly after the responses)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log_file.read_text() if self.log_file.exists() else ""
            lines = [json.loads(line) for line in text.splitlines()]
            mine = [line for line in lines if line["request_id"] in request_ids]
            if {line["request_id"] for line in mine} == request_ids or time.monotonic() > deadline:
                return mine
            time.sleep(0.1)


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Governed]:
    data = tmp_path_factory.mktemp("governed")
    log_file = data / "logs" / "telemetry.jsonl"
    config = data / "gateway.yaml"
    config.write_text(CONFIG.format(log_file=log_file))
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    env = {
        # The seed's user has no OPENAI_API_KEY set: that is what puts it in stub mode.
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))},
        "GATEWAY_CONFIG": str(config),
    }
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        yield Governed(suite, log_file)
    finally:
        suite.stop()


def _fresh_minute(needed_s: float = 20.0) -> None:
    """Wait for the next calendar minute when fewer than ``needed_s`` seconds are left in this one:
    the per-minute limit is a calendar window, and a loop that straddles its end sees two."""
    left = 60.0 - time.time() % 60.0
    if left < needed_s:
        time.sleep(left + 0.05)


def test_the_stub_mode_request_answers_as_documented(governed: Governed) -> None:
    response = governed.post("/v1/chat", STUB_REQUEST)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"id", "model", "provider", "usage", "message"} <= body.keys()
    assert isinstance(body["id"], str) and body["id"]
    assert body["model"] == "default-chat"
    # The seed says "openai"; ours adds that the answer is a stub.
    assert body["provider"] == "openai (stub)"
    assert response.headers["x-gateway-provider"] == "openai (stub)"
    usage = body["usage"]
    assert all(isinstance(usage[k], int) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["message"]["role"] == "assistant"
    assert isinstance(body["message"]["content"], str) and body["message"]["content"]

    [line] = governed.telemetry({response.headers["x-request-id"]})
    assert (line["tenant"], line["key_id"], line["client_id"]) == ("anonymous", "client:dev-local-1", "dev-local-1")
    assert (line["model"], line["outcome"]) == ("default-chat", "success")
    assert line["prompt_tokens"] == usage["prompt_tokens"]
    assert line["completion_tokens"] == usage["completion_tokens"]


def test_the_21st_rapid_request_is_refused_as_documented(governed: Governed) -> None:
    _fresh_minute()
    responses = [governed.post("/v1/chat", LOOP_REQUEST) for _ in range(21)]
    assert [r.status_code for r in responses[:20]] == [200] * 20, responses[0].text
    refused = responses[20]
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert error["code"] == "rate_limit_exceeded"
    assert isinstance(error["message"], str) and error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "20"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"

    # One telemetry line per served request; the refused one never reached a provider or the ledger.
    served = {r.headers["x-request-id"] for r in responses[:20]}
    lines = governed.telemetry(served)
    assert sorted(line["request_id"] for line in lines) == sorted(served)
    assert len({line["event_id"] for line in lines}) == 20
    assert {line["key_id"] for line in lines} == {"client:test"}
    assert not governed.telemetry({refused.headers["x-request-id"]}, timeout_s=1.0)


def test_the_telemetry_log_holds_no_prompt_and_no_answer(governed: Governed) -> None:
    response = governed.post("/v1/chat", STUB_REQUEST)
    assert response.status_code == 200, response.text
    governed.telemetry({response.headers["x-request-id"]})
    text = governed.log_file.read_text()
    assert "Explain rate limiting" not in text
    assert response.json()["message"]["content"] not in text
    for line in text.splitlines():
        record = json.loads(line)
        assert {"request_id", "event_id", "tenant", "key_id", "model", "provider", "outcome", "time"} <= record.keys()
        assert {"prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "latency_ms"} <= record.keys()


# -- the same setup through OpenAI's route ----------------------------------------------------


def _completion(client_id: str | None, content: str = "hi") -> bytes:
    body: dict[str, Any] = {"model": "default-chat", "messages": [{"role": "user", "content": content}]}
    if client_id is not None:
        body["client_id"] = client_id
    return json.dumps(body).encode()


def test_a_keyless_client_id_is_served_through_chat_completions(governed: Governed) -> None:
    response = governed.post("/v1/chat/completions", _completion("completions-1"))
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-provider"] == "openai (stub)"
    assert response.json()["choices"][0]["message"]["content"]
    [line] = governed.telemetry({response.headers["x-request-id"]})
    assert (line["tenant"], line["key_id"]) == ("anonymous", "client:completions-1")


def test_a_prompt_over_max_prompt_tokens_is_refused_before_any_quota(governed: Governed) -> None:
    _fresh_minute()
    refused = governed.post("/v1/chat/completions", _completion("big-prompt", "x" * 2100))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "messages"
    # It reserved nothing: the caller's first served request still finds all 20 left but its own.
    served = governed.post("/v1/chat/completions", _completion("big-prompt"))
    assert served.status_code == 200, served.text
    assert served.headers["x-ratelimit-remaining-requests"] == "19"


def test_without_a_client_id_the_caller_is_its_address(governed: Governed) -> None:
    response = governed.post("/v1/chat/completions", _completion(None))
    assert response.status_code == 200, response.text
    [line] = governed.telemetry({response.headers["x-request-id"]})
    assert line["key_id"] == "ip:127.0.0.1"
    assert line["client_id"] is None


def test_each_client_id_has_its_own_bucket_and_a_spoofed_forward_changes_nothing(governed: Governed) -> None:
    _fresh_minute()
    first = [governed.post("/v1/chat/completions", _completion("bucket-a")) for _ in range(21)]
    assert [r.status_code for r in first] == [200] * 20 + [429]
    assert first[-1].json()["error"]["type"] == "rate_limit_exceeded"
    assert first[-1].headers["x-ratelimit-limit-requests"] == "20"
    assert first[-1].headers["x-ratelimit-remaining-requests"] == "0"
    assert int(first[-1].headers["retry-after"]) >= 1
    other = governed.post("/v1/chat/completions", _completion("bucket-b"))
    assert other.status_code == 200, other.text
    assert other.headers["x-ratelimit-remaining-requests"] == "19"
    # The edge trusts no proxy here: X-Forwarded-For cannot move a caller to a fresh bucket.
    spoofed = governed.post("/v1/chat/completions", _completion(None), {"X-Forwarded-For": "198.51.100.77"})
    [line] = governed.telemetry({spoofed.headers["x-request-id"]})
    assert line["key_id"] == "ip:127.0.0.1"


def test_a_keyless_caller_cannot_read_usage(governed: Governed) -> None:
    # Anonymous callers are served chat and embeddings only; usage still wants a key.
    response = httpx.get(f"{governed.suite.edge_url}/v1/usage", timeout=30)
    assert response.status_code == 401, response.text
