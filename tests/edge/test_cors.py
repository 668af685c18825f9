"""CORS at the edge: preflights and response headers for configured origins only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from edge.app import create_app
from gateway_common.config import ConfigError, GatewayConfig, load_config
from tests.edge.openai_schema import errors as schema_errors
from tests.edge.router_stub import CountingRouter, router_stub

ALLOWED = "https://app.example.com"
CHAT = {"model": "mock:x", "messages": [{"role": "user", "content": "hi"}]}


def _preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type") -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": method, "access-control-request-headers": headers}


@pytest.fixture
def cors_client() -> Iterator[tuple[TestClient, CountingRouter]]:
    with router_stub() as (address, servicer):
        config = GatewayConfig.model_validate(
            {"edge": {"cors_origins": [ALLOWED]}, "services": {"router": {"address": address}}}
        )
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            yield client, servicer


def test_a_preflight_from_an_allowed_origin_allows_the_call_and_authorization(
    cors_client: tuple[TestClient, CountingRouter],
) -> None:
    client, servicer = cors_client
    # The header sizes and request id middlewares run inside CORS: they must not turn this into an error.
    response = client.options(
        "/v1/chat/completions",
        headers=_preflight(ALLOWED, headers="authorization, content-type, x-stainless-os, x-request-id"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "x-stainless-os" in allowed_headers
    assert "access-control-allow-credentials" not in response.headers
    assert int(response.headers["access-control-max-age"]) > 0
    assert sum(servicer.calls.values()) == 0


def test_responses_to_an_allowed_origin_expose_the_headers_clients_read(
    cors_client: tuple[TestClient, CountingRouter],
) -> None:
    client, _ = cors_client
    response = client.post("/v1/chat/completions", json=CHAT, headers={"origin": ALLOWED})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].lower().split(",")}
    for name in (
        "x-request-id",
        "retry-after",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-tokens",
        "x-gateway-provider",
        "x-gateway-max-tokens-capped",
    ):
        assert name in exposed
    # Errors too: a browser page can read a refusal only when it carries the CORS headers.
    refused = client.post("/v1/chat/completions", content=b"{bad", headers={"origin": ALLOWED})
    assert refused.status_code == 400
    assert refused.headers["access-control-allow-origin"] == ALLOWED


def test_other_origins_and_plain_requests_get_no_cors_headers(cors_client: tuple[TestClient, CountingRouter]) -> None:
    client, _ = cors_client
    preflight = client.options("/v1/chat/completions", headers=_preflight("https://evil.example"))
    assert preflight.status_code == 405
    assert schema_errors("ErrorResponse", preflight.json()) == []
    for response in (
        preflight,
        client.post("/v1/chat/completions", json=CHAT, headers={"origin": "https://evil.example"}),
        client.post("/v1/chat/completions", json=CHAT),
    ):
        assert not [name for name in response.headers if name.lower().startswith("access-control-")], response.headers


def test_without_configured_origins_no_response_has_cors_headers() -> None:
    with router_stub() as (address, _):
        config = GatewayConfig.model_validate({"services": {"router": {"address": address}}})
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            preflight = client.options("/v1/chat/completions", headers=_preflight(ALLOWED))
            plain = client.post("/v1/chat/completions", json=CHAT, headers={"origin": ALLOWED})
    assert preflight.status_code == 405
    assert plain.status_code == 200
    for response in (preflight, plain):
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_a_wildcard_allows_any_origin() -> None:
    with router_stub() as (address, _):
        config = GatewayConfig.model_validate(
            {"edge": {"cors_origins": ["*"]}, "services": {"router": {"address": address}}}
        )
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            preflight = client.options("/v1/embeddings", headers=_preflight("http://localhost:5173"))
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"


def test_origins_come_from_the_environment_and_bad_ones_stop_the_start() -> None:
    config = load_config(env={"GATEWAY_CORS_ORIGINS": "https://a.example, http://localhost:3000"})
    assert config.edge.cors_origins == ["https://a.example", "http://localhost:3000"]
    with pytest.raises(ConfigError, match=r"edge\.cors_origins"):
        load_config(env={"GATEWAY_CORS_ORIGINS": "https://a.example/"})
