"""The edge's Responses API routes against the in-process stand-in router: a refused body never
reaches the router, the canonical request carries the conversation options, and a stream is typed
SSE events ending in response.completed, without [DONE]."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.edge.openai_schema import errors, stream_event_errors
from tests.edge.router_stub import edge_with_router_stub

AUTH = {"authorization": "Bearer gw-test"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "mock:x"}, "input"),
        ({"input": [{"type": "computer_call"}]}, "input[0].type"),
        ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
    ],
)
def test_a_refused_body_is_a_400_naming_it_and_never_reaches_the_router(body: Any, param: str) -> None:
    with edge_with_router_stub() as (client, router):
        for path in ("/v1/responses", "/v1/responses/stream"):
            response = client.post(path, json=body, headers=AUTH)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == param
        assert sum(router.calls.values()) == 0


def test_create_renders_the_routers_completion_as_a_response() -> None:
    with edge_with_router_stub() as (client, router):
        response = client.post("/v1/responses", json={"model": "mock:x", "input": "hi", "store": False}, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert errors("Response", body) == [] and body["output_text"] == "ok"
        assert response.headers["x-gateway-provider"] == "stub"
        assert router.calls["Chat"] == 1


def test_stream_is_typed_events_without_done() -> None:
    with edge_with_router_stub() as (client, router):
        response = client.post("/v1/responses/stream", json={"model": "mock:x", "input": "hi"}, headers=AUTH)
        assert response.status_code == 200
        lines = response.text.splitlines()
        assert "data: [DONE]" not in lines
        kinds = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
        data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert [d["type"] for d in data] == kinds
        assert all(stream_event_errors(d) == [] for d in data)
        assert router.calls["StreamChat"] == 1


def test_input_items_paging_parameters_are_checked_before_the_router() -> None:
    with edge_with_router_stub() as (client, router):
        for query, param in (("limit=0", "limit"), ("limit=101", "limit"), ("order=sideways", "order")):
            response = client.get(f"/v1/responses/resp_1/input_items?{query}", headers=AUTH)
            assert response.status_code == 400 and response.json()["error"]["param"] == param
        assert sum(router.calls.values()) == 0
