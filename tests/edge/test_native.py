"""The native routes as JSON: the unified chat shape, numbers as numbers, ``?from=&to=``, OpenAI errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from edge.proto_json import to_json
from gateway.router.v1 import router_pb2
from tests.edge.router_stub import CountingRouter, edge_with_router_stub

HELLO = {"model": "mock:any", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def edge() -> Iterator[tuple[TestClient, CountingRouter]]:
    with edge_with_router_stub() as pair:
        yield pair


def test_the_documented_chat_request_reaches_the_router_in_the_unified_form(
    edge: tuple[TestClient, CountingRouter],
) -> None:
    client, router = edge
    response = client.post("/v1/chat", json={**HELLO, "client_id": "svc-1", "temperature": 0.2, "max_tokens": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "id": "c1",
        "model": "mock:any",
        "provider": "stub",
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        "message": {"role": "assistant", "content": "ok"},
        "finish_reason": "stop",
        "created": 1795645428,
    }
    assert router.calls["Chat"] == 1


def test_the_unified_stream_is_one_chunk_per_line_and_ends_with_an_error_line_on_failure(
    edge: tuple[TestClient, CountingRouter],
) -> None:
    client, _ = edge
    good = client.post("/v1/chat:stream", json=HELLO)
    assert good.status_code == 200, good.text
    lines = [json.loads(line) for line in good.text.splitlines()]
    assert lines[0]["delta"] == {"content": "ok"} and "finish_reason" not in lines[0]
    assert lines[-1]["finish_reason"] == "stop"
    broken = client.post("/v1/chat:stream", json={**HELLO, "model": "break"})
    last = json.loads(broken.text.splitlines()[-1])
    assert set(last) == {"error"} and last["error"]["type"] == "server_error"
    assert all("finish_reason" not in json.loads(line) for line in broken.text.splitlines()[:-1])


def test_a_canonical_body_on_the_native_route_is_an_openai_shaped_400(edge: tuple[TestClient, CountingRouter]) -> None:
    client, router = edge
    response = client.post("/v1/chat", json={"completion": {"model": "m"}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == "body"
    assert sum(router.calls.values()) == 0


def test_usage_reads_from_and_to_and_answers_numbers(edge: tuple[TestClient, CountingRouter]) -> None:
    client, router = edge
    response = client.get("/v1/usage", params={"from": "2024-01-01T00:00:00Z", "to": "2024-12-31T23:59:59Z"})
    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    assert row["requests"] == 2 and row["cost_micro_usd"] == 3_000_000_000 and row["errors"] == 0
    (sent,) = router.usage_requests
    assert sent.start_time.ToJsonString() == "2024-01-01T00:00:00Z"
    assert sent.end_time.ToJsonString() == "2024-12-31T23:59:59Z"
    # The existing parameter names still work.
    assert client.get("/v1/usage", params={"start_time": "2024-01-01T00:00:00Z"}).status_code == 200


def test_no_usage_is_an_empty_list(edge: tuple[TestClient, CountingRouter]) -> None:
    client, _ = edge
    assert client.get("/v1/usage", params={"tenant_id": "empty"}).json() == {"rows": []}


@pytest.mark.parametrize("name", ["from", "to"])
def test_a_bad_time_is_a_400_naming_the_parameter(edge: tuple[TestClient, CountingRouter], name: str) -> None:
    client, router = edge
    response = client.get("/v1/usage", params={name: "last tuesday"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == name
    assert sum(router.calls.values()) == 0


def test_int64_fields_render_as_json_numbers_and_repeated_fields_as_lists() -> None:
    response = router_pb2.GetUsageResponse()
    response.rows.add(prompt_tokens=2**40)
    assert to_json(response)["rows"][0]["prompt_tokens"] == 2**40
    assert to_json(router_pb2.ListModelsResponse()) == {"models": []}
