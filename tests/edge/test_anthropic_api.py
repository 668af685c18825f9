"""The edge's Anthropic façade in-process, against a stand-in router over real gRPC.

Proves the HTTP layer: where the key is read from, that bad input never reaches the router, that
every router error becomes Anthropic's error shape and status, and that bodies and events validate
against the official spec. The whole pipeline (real router, limits, metering) is in
``tests/e2e/test_anthropic_sdk.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.chat.v1 import chat_pb2
from tests.edge import anthropic_schema
from tests.edge.anthropic_router_stub import ERRORS, AnthropicRouter, anthropic_edge


@pytest.fixture
def edge() -> Iterator[tuple[TestClient, AnthropicRouter]]:
    with anthropic_edge() as pair:
        yield pair


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "mock:x", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}], **fields}


def _assert_error(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert anthropic_schema.errors("ErrorResponse", body) == []
    assert body["error"]["type"] == kind
    assert response.headers["request-id"]
    return body


def test_x_api_key_and_authorization_both_reach_the_router_as_the_key(edge: tuple[TestClient, AnthropicRouter]) -> None:
    client, router = edge
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "some-future-beta-2099-01-01"}
    assert client.post("/v1/messages", json=_body(), headers={**headers, "x-api-key": "k1"}).status_code == 200
    assert client.post("/v1/messages", json=_body(), headers={"authorization": "Bearer k2"}).status_code == 200
    both = {"x-api-key": "k3", "authorization": "Bearer other"}
    assert client.post("/v1/messages", json=_body(), headers=both).status_code == 200
    assert [m["authorization"] for m in router.metadata] == ["Bearer k1", "Bearer k2", "Bearer k3"]


def test_message_is_valid_and_carries_request_id(edge: tuple[TestClient, AnthropicRouter]) -> None:
    client, router = edge
    response = client.post("/v1/messages", json=_body(system="Be kind."), headers={"x-api-key": "k"})
    assert response.status_code == 200
    body = response.json()
    assert anthropic_schema.errors("Message", body) == []
    assert body["content"] == [{"type": "text", "text": "ok"}]
    assert body["usage"] == {"input_tokens": 5, "output_tokens": 1}
    assert response.headers["request-id"] == response.headers["x-request-id"]
    assert response.headers["x-gateway-provider"] == "stub"
    assert router.requests[0].messages[0].role == chat_pb2.ROLE_SYSTEM


def test_stream_events_are_valid_and_in_order(edge: tuple[TestClient, AnthropicRouter]) -> None:
    client, _ = edge
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    response = client.post("/v1/messages", json=_body(stream=True, tools=tools), headers={"x-api-key": "k"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"]
    assert response.text.startswith("event: message_start\ndata: {")
    events = anthropic_schema.parse_sse(response.text)
    for name, data in events:
        assert anthropic_schema.stream_event_errors(name, data) == []
    assert [n for n, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_a_stream_broken_mid_way_ends_with_an_error_event(edge: tuple[TestClient, AnthropicRouter]) -> None:
    client, _ = edge
    response = client.post("/v1/messages", json=_body(model="break", stream=True), headers={"x-api-key": "k"})
    assert response.status_code == 200
    events = anthropic_schema.parse_sse(response.text)
    for name, data in events:
        assert anthropic_schema.stream_event_errors(name, data) == []
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "The stream broke."}},
    )
    assert "message_stop" not in [n for n, _ in events]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "status", "kind"),
    [
        ("unauthenticated", 401, "authentication_error"),
        ("forbidden", 403, "permission_error"),
        ("unknown", 404, "not_found_error"),
        ("limited", 429, "rate_limit_error"),
        ("exhausted", 529, "overloaded_error"),
        ("deadline", 504, "api_error"),
        ("bug", 500, "api_error"),
    ],
)
def test_router_errors_in_anthropic_shape(
    edge: tuple[TestClient, AnthropicRouter], model: str, status: int, kind: str, stream: bool
) -> None:
    client, _ = edge
    response = client.post("/v1/messages", json=_body(model=model, stream=stream), headers={"x-api-key": "k"})
    body = _assert_error(response, status, kind)
    assert body["error"]["message"] == ERRORS[model].message
    if model == "limited":
        assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "body"),
        (b"{not json", ""),
        (b"[]", "body"),
        (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
        (
            json.dumps({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}).encode(),
            "messages[0].content[0].type",
        ),
        (b'{"model": "m", "max_tokens": 1e400, "messages": []}', ""),
        (b"[" * 5000 + b"]" * 5000, ""),
    ],
)
def test_bad_input_is_a_400_in_anthropic_shape_and_never_reaches_the_router(
    edge: tuple[TestClient, AnthropicRouter], raw: bytes, fragment: str
) -> None:
    client, router = edge
    # The same bodies on both routes; /v1/messages then also misses max_tokens, checked after the rest.
    for path in ("/v1/messages/count_tokens", "/v1/messages"):
        response = client.post(path, content=raw, headers={"x-api-key": "k", "content-type": "application/json"})
        body = _assert_error(response, 400, "invalid_request_error")
        assert fragment in body["error"]["message"]
    assert sum(router.calls.values()) == 0


def test_a_body_over_the_limit_is_a_413(edge: tuple[TestClient, AnthropicRouter]) -> None:
    client, router = edge
    big = _body(messages=[{"role": "user", "content": "x" * (70 * 1024)}])
    _assert_error(client.post("/v1/messages", json=big, headers={"x-api-key": "k"}), 413, "invalid_request_error")
    assert sum(router.calls.values()) == 0


def test_count_tokens_answers_the_routers_count(edge: tuple[TestClient, AnthropicRouter]) -> None:
    client, router = edge
    body = {"model": "mock:x", "messages": [{"role": "user", "content": "Hi"}], "system": "s"}
    response = client.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": "k"})
    assert response.status_code == 200
    assert response.json() == {"input_tokens": 42}
    assert anthropic_schema.errors("BetaCountMessageTokensResponse", response.json()) == []
    assert response.headers["x-gateway-token-count"] == "ceiling"
    assert router.calls == {"CountTokens": 1} and router.metadata[0]["authorization"] == "Bearer k"
    refused = client.post("/v1/messages/count_tokens", json={**body, "model": "unauthenticated"})
    _assert_error(refused, 401, "authentication_error")
