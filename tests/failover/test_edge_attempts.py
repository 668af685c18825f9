"""The edge says which attempts an answer took: ``x-gateway-attempts``, and the error body's list."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from edge.app import create_app
from edge.state import EdgeState
from gateway_common.config import GatewayConfig
from tests.failover.conftest import Rig
from tests.router.test_orchestration import KEY

AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
async def edge(rig: Rig) -> AsyncIterator[httpx.AsyncClient]:
    """The edge app in-process (same event loop as the rig), dialling the rig's router."""
    config = GatewayConfig.model_validate(
        {"services": {"router": {"listen": rig.router_address, "address": rig.router_address}}}
    )
    app = create_app(config)
    app.state.edge = EdgeState(config)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            yield client
    finally:
        await app.state.edge.close()


def _body(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Say the pangram."}]}


async def test_an_answer_after_failures_lists_its_attempts(rig: Rig, edge: httpx.AsyncClient) -> None:
    response = await edge.post("/v1/chat/completions", json=_body("persistent"), headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-attempts"] == (
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503); "
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503); up:ok: answered"
    )
    assert response.headers["x-gateway-provider"] == "up"


async def test_a_first_attempt_answer_has_no_attempts_header(rig: Rig, edge: httpx.AsyncClient) -> None:
    response = await edge.post("/v1/chat/completions", json=_body("up:ok"), headers=AUTH)
    assert response.status_code == 200, response.text
    assert "x-gateway-attempts" not in response.headers


async def test_every_attempt_failed_names_the_primary_cause_and_lists_them(rig: Rig, edge: httpx.AsyncClient) -> None:
    response = await edge.post("/v1/chat/completions", json=_body("rejects"), headers=AUTH)
    assert response.status_code == 502  # the primary's 503 (an upstream outage), not the fallback's 400
    error = response.json()["error"]
    assert error["code"] == "overloaded"
    assert error["attempts"] == [
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503)",
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503)",
        "up:rejects: INVALID_ARGUMENT UPSTREAM_ERROR (HTTP 400)",
    ]
    assert response.headers["x-gateway-attempts"] == "; ".join(error["attempts"])
