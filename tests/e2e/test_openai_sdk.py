"""End to end: the official openai SDK (and plain HTTP) against the edge of the real suite."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello there, gateway!"}]


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_health_and_ready(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/ready")
    assert ready.status_code == 200
    assert set(ready.json()["services"].values()) == {"SERVING"}


def test_models_list_and_retrieve(gateway: Gateway) -> None:
    client = gateway.client()
    ids = [m.id for m in client.models.list()]
    assert "mock:gateway-demo" in ids and "fast" in ids and "mock:fast-demo" in ids
    assert client.models.retrieve("fast").id == "fast"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope:nothing")
    assert info.value.code == "model_not_found"


def test_completion(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model="mock:demo", messages=HELLO)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert raw.headers["x-request-id"]
    assert int(raw.headers["x-ratelimit-limit-requests"]) == 10000


def test_default_model_when_none_is_named(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gateway.key}"},
        json={"messages": HELLO},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_request_id_is_echoed(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="mock:demo", messages=HELLO, extra_headers={"x-request-id": "my-trace-123"}
    )
    assert raw.headers["x-request-id"] == "my-trace-123"


def test_stream_with_usage(gateway: Gateway) -> None:
    stream = gateway.client().chat.completions.create(
        model="mock:demo", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(gateway: Gateway) -> None:
    chunks = list(gateway.client().chat.completions.create(model="mock:demo", messages=HELLO, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)


def test_stream_wire_format_ends_with_done(gateway: Gateway) -> None:
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gateway.key}"},
        json={"model": "mock:demo", "messages": HELLO, "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = [line for line in body.split("\n") if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0].removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_stream_chunks_arrive_before_upstream_finishes(gateway: Gateway) -> None:
    stats = gateway.upstream.stats
    finished_before = stats.streams_finished
    stream = gateway.client().chat.completions.create(model="fake:slow-20", messages=HELLO, stream=True)
    first = next(iter(stream))
    # The upstream is still producing (20 chunks, 50 ms apart) when the first chunk is here.
    assert first.choices[0].delta.role == "assistant"
    assert stats.streams_finished == finished_before
    rest = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices).startswith("tok0 tok1")
    _wait_for(lambda: stats.streams_finished == finished_before + 1, "the upstream stream to finish")


def test_client_disconnect_closes_upstream_request(gateway: Gateway) -> None:
    stats = gateway.upstream.stats
    disconnected_before = stats.streams_disconnected
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gateway.key}"},
        json={"model": "fake:slow-200", "messages": HELLO, "stream": True},
        timeout=30,
    ) as response:
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data: ")]
        assert received
    # Closing the HTTP response went edge -> router -> providers -> upstream.
    _wait_for(lambda: stats.streams_disconnected == disconnected_before + 1, "the upstream to see the disconnect")


def test_upstream_request_carries_key_and_usage_option(gateway: Gateway) -> None:
    gateway.client().chat.completions.create(model="fake:plain", messages=HELLO, temperature=0.5, seed=7)
    body = gateway.upstream.stats.last_body
    assert body["model"] == "plain" and body["temperature"] == 0.5 and body["seed"] == 7


def test_bad_key(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        gateway.client(key="gw-not-a-real-key").chat.completions.create(model="mock:demo", messages=HELLO)
    assert info.value.status_code == 401
    assert "gw-not-a-real-key" not in str(info.value.body)


def test_missing_key(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "mock:demo", "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.create(model="no-such-model", messages=HELLO)
    assert info.value.code == "model_not_found"
    assert "no-such-model" in info.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake:x", "messages": []}, "messages"),
        ({"model": "fake:x"}, "messages"),
        ({"model": "fake:x", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": "fake:x", "messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"model": "fake:x", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "fake:x", "messages": HELLO, "max_tokens": -1}, "max_tokens"),
        ({"model": 5, "messages": HELLO}, "model"),
        ({"model": "fake:x", "messages": "hello"}, "messages"),
        ({"model": "fake:x", "messages": HELLO, "stream": "yes"}, "stream"),
    ],
)
def test_bad_body_names_the_field_and_costs_nothing(gateway: Gateway, body: dict[str, object], param: str) -> None:
    requests_before = gateway.upstream.stats.requests
    headers = {"Authorization": f"Bearer {gateway.key}"}
    good = {"model": "mock:demo", "messages": HELLO}
    # The requests quota counts per calendar minute (UTC): the two good requests around the bad one
    # must fall in one minute for their remaining counts to compare, so a run that straddles a
    # minute boundary is done again (at most once more: the three requests take well under a minute).
    for _ in range(2):
        started = time.time()
        before = httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers, json=good)
        response = httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers, json=body)
        after = httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers, json=good)
        if started // 60 == time.time() // 60:
            break
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error" and error["message"]
    # Exactly the two good requests were counted, and the bad one never reached the upstream.
    used = int(before.headers["x-ratelimit-remaining-requests"]) - int(after.headers["x-ratelimit-remaining-requests"])
    assert used == 1
    assert gateway.upstream.stats.requests == requests_before


def test_malformed_json(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
        content=b'{"model": "mock:demo", "messages": [',
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"


def test_oversized_body(gateway: Gateway) -> None:
    big = [{"role": "user", "content": "x" * 70_000}]
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gateway.key}"},
        json={"model": "mock:demo", "messages": big},
    )
    assert response.status_code == 413
    assert "65536" in response.json()["error"]["message"]


def test_rate_limit_429_with_headers(gateway: Gateway) -> None:
    created = httpx.post(
        f"{gateway.url}/admin/v1/keys",
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        json={
            "tenant_id": "acme",
            "name": "tight",
            # A day window: a minute window could roll over between the requests.
            "limits": {"quotas": [{"unit": "UNIT_REQUESTS", "window": "WINDOW_DAY", "limit": 2}]},
        },
    )
    assert created.status_code == 200, created.text
    client = gateway.client(key=created.json()["secret"])
    for _ in range(2):
        client.chat.completions.create(model="mock:demo", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="mock:demo", messages=HELLO)
    headers = info.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert info.value.code == "rate_limit_exceeded"


def test_upstream_errors_map_to_sdk_exceptions(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="mock:error-429", messages=HELLO)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="mock:error-400", messages=HELLO)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="mock:error-500", messages=HELLO)
    assert info.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as timeout:
        client.chat.completions.create(model="mock:timeout", messages=HELLO)
    assert timeout.value.status_code == 504


def test_native_chat_route(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat",
        headers={"Authorization": f"Bearer {gateway.key}"},
        json={"model": "mock:demo", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["message"]["role"] == "assistant" and completion["message"]["content"]
    assert completion["provider"] == "mock"
    missing = httpx.post(f"{gateway.url}/v1/chat", json={"model": "mock:demo"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"


def test_native_stream_ends_with_a_finish_reason_or_an_error_line(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.key}"}
    body = {"model": "mock:demo", "messages": [{"role": "user", "content": "Hi"}]}
    good = httpx.post(f"{gateway.url}/v1/chat:stream", headers=headers, json=body, timeout=30)
    assert good.status_code == 200, good.text
    chunks = [json.loads(line) for line in good.text.splitlines()]
    assert "".join(c["delta"].get("content", "") for c in chunks)
    assert any(c.get("finish_reason") == "stop" for c in chunks)
    assert chunks[-1]["usage"]["total_tokens"] > 0 and "error" not in chunks[-1]
    broken = httpx.post(
        f"{gateway.url}/v1/chat:stream", headers=headers, json={**body, "model": "mock:stream-break"}, timeout=30
    )
    lines = [json.loads(line) for line in broken.text.splitlines()]
    assert set(lines[-1]) == {"error"}, lines
    assert not any(c.get("finish_reason") for c in lines[:-1])


def test_native_usage_reads_rfc3339_from_and_to(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.key}"}
    empty = httpx.get(
        f"{gateway.url}/v1/usage",
        params={"from": "2024-01-01T00:00:00Z", "to": "2024-12-31T23:59:59Z", "group_by": "GROUP_BY_MODEL"},
        headers=headers,
    )
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"rows": []}
    bad = httpx.get(f"{gateway.url}/v1/usage", params={"to": "yesterday"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "to"


def test_provider_without_its_key_answers_400_asking_for_a_credential(gateway: Gateway) -> None:
    # No global key: the provider serves tenants with their own credentials (issue 11); this
    # tenant has none, which the caller can fix, so it is not a 5xx.
    with pytest.raises(openai.APIStatusError) as info:
        gateway.client().chat.completions.create(model="openai:gpt-4o-mini", messages=HELLO)
    assert info.value.status_code == 400
    assert "no credential for provider 'openai'" in info.value.message
    assert "OPENAI_API_KEY" in info.value.message


def test_stub_mode_answers_like_the_mock_and_says_so(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(model="stubbed:claude-x", messages=HELLO)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-gateway-provider"] == "stubbed (stub)"
    plain = gateway.client().chat.completions.with_raw_response.create(model="mock:demo", messages=HELLO)
    assert plain.headers["x-gateway-provider"] == "mock"


def test_usage_route_reports_the_tenants_ledger(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.other_key}"}
    for _ in range(2):
        httpx.post(
            f"{gateway.url}/v1/chat/completions", headers=headers, json={"model": "mock:demo", "messages": HELLO}
        )

    def rows() -> list[dict[str, object]]:
        response = httpx.get(
            f"{gateway.url}/v1/usage",
            params={"group_by": "GROUP_BY_MODEL", "start_time": "2000-01-01T00:00:00Z"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        return list(response.json()["rows"])

    # Metering records off the critical path: poll until both requests are in the ledger.
    _wait_for(lambda: any(r["group"] == "mock:demo" and r["requests"] >= 2 for r in rows()), "the ledger")
    other = httpx.get(f"{gateway.url}/v1/usage", params={"tenant_id": "acme"}, headers=headers)
    assert other.status_code == 403
