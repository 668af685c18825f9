"""The edge app in-process, without the services behind it: bad input, size limits, and bugs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from gateway_common.config import GatewayConfig
from tests.edge.openai_schema import errors as schema_errors


@pytest.fixture
def client() -> Iterator[TestClient]:
    config = GatewayConfig.model_validate({"edge": {"max_body_bytes": 1024}})
    with TestClient(create_app(config), raise_server_exceptions=False) as test_client:
        yield test_client


def test_bad_bodies_never_reach_the_router(client: TestClient) -> None:
    # Nothing listens behind this edge: a request that got past parsing would fail with 503.
    for body, status, param in [
        (b"{not json", 400, "body"),
        (b"", 400, "body"),
        (b"[1, 2]", 400, "body"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}', 400, "n"),
        (b"x" * 2048, 413, "body"),
    ]:
        response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == param
        assert schema_errors("ErrorResponse", response.json()) == []
        assert response.headers["x-request-id"].startswith("req_")


def test_an_unreachable_router_is_a_503_in_openai_shape(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "mock:x", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 503
    assert schema_errors("ErrorResponse", response.json()) == []


def test_a_bug_is_a_500_with_the_request_id_and_no_stack(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway_common import openai_wire

    def boom(body: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(openai_wire, "parse_chat_request", boom)
    response = client.post("/v1/chat/completions", json={"messages": []}, headers={"x-request-id": "bug-report-1"})
    assert response.status_code == 500
    assert "bug-report-1" in response.json()["error"]["message"]
    assert "secret internals" not in response.text
    assert response.headers["x-request-id"] == "bug-report-1"
