"""Bare model ids: prefixes, route overrides, their precedence over aliases, MOCK_MODE, and the
router's cached route table (one GetRouteTable per interval, never per request)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from gateway.auth.v1 import auth_pb2
from gateway_common.config import ConfigError, GatewayConfig, load_config
from gateway_common.errors import GatewayError, Reason
from services.router.planner import Candidate, Planner, RouteOverride
from services.router.routes import RouteTable
from services.router.strategies import allow_only

CONFIG = GatewayConfig.model_validate(
    {
        "providers": {"openai-eu": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {
            "gpt-4o": {"deployments": [{"provider": "mock", "model": "aliased-4o"}]},
            "default-chat": {"deployments": [{"provider": "anthropic", "model": "claude-haiku"}]},
        },
    }
)


def _ids(planner: Planner, name: str) -> list[str]:
    return [c.id for c in planner.plan(name).candidates]


def test_bare_ids_route_by_their_vendor_prefix() -> None:
    planner = Planner(GatewayConfig())
    for name in ("gpt-4o-mini", "o1-preview", "o3-mini", "o4-mini", "chatgpt-4o-latest", "text-embedding-3-small"):
        assert _ids(planner, name) == [f"openai:{name}"], name
    assert _ids(planner, "claude-3-5-sonnet-latest") == ["anthropic:claude-3-5-sonnet-latest"]
    assert _ids(planner, "gemini-2.5-pro") == ["gemini:gemini-2.5-pro"]
    # The plan keeps the name the client sent (it is what responses and the ledger carry).
    assert planner.plan("gemini-2.5-pro").model == "gemini-2.5-pro"
    for unknown in ("llama-3", "GPT-4o", "nope"):
        with pytest.raises(GatewayError) as info:
            planner.plan(unknown)
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.NOT_FOUND, Reason.MODEL_NOT_FOUND)
        assert info.value.metadata["param"] == "model"


def test_the_prefix_table_is_configurable_and_the_longest_prefix_wins() -> None:
    config = GatewayConfig.model_validate(
        {
            "providers": {"local": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1"}},
            "routing": {"prefixes": {"gpt-": "openai", "gpt-4o-eu": "local", "llama-": "local"}},
        }
    )
    planner = Planner(config)
    assert _ids(planner, "gpt-4o-eu-1") == ["local:gpt-4o-eu-1"]
    assert _ids(planner, "gpt-4o") == ["openai:gpt-4o"]
    assert _ids(planner, "llama-3.1-8b") == ["local:llama-3.1-8b"]
    # The table replaces the default one: claude- is no longer routed by prefix.
    with pytest.raises(GatewayError):
        planner.plan("claude-x")


def test_a_prefix_naming_an_unknown_provider_stops_the_config(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("routing:\n  prefixes:\n    gpt-: openai-eu\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "routing.prefixes.gpt-" in str(info.value) and "openai-eu" in str(info.value)


def test_override_beats_alias_beats_prefix_and_provider_model_stays() -> None:
    table: dict[str, RouteOverride] = {}
    planner = Planner(CONFIG, overrides=lambda: table)
    assert _ids(planner, "gpt-4o") == ["mock:aliased-4o"]  # alias over prefix
    assert _ids(planner, "gpt-4o-mini") == ["openai:gpt-4o-mini"]  # prefix
    table["gpt-4o"] = RouteOverride("openai-eu")
    table["gpt-4o-mini"] = RouteOverride("openai-eu", "gpt-4o-mini-2024-07-18")
    table["default-chat"] = RouteOverride("mock", "canned")
    table["my-model"] = RouteOverride("mock")
    assert _ids(planner, "gpt-4o") == ["openai-eu:gpt-4o"]  # override over alias
    assert _ids(planner, "gpt-4o-mini") == ["openai-eu:gpt-4o-mini-2024-07-18"]  # override over prefix
    assert _ids(planner, "default-chat") == ["mock:canned"]
    assert _ids(planner, "my-model") == ["mock:my-model"]  # an override makes an unknown name routable
    assert _ids(planner, "openai:gpt-4o") == ["openai:gpt-4o"]  # provider:model is explicit
    # An override whose provider left the config is skipped, not a dead end.
    table["gpt-4o"] = RouteOverride("gone")
    assert _ids(planner, "gpt-4o") == ["mock:aliased-4o"]
    listed = {ident: provider for ident, provider, _ in planner.catalog()}
    assert listed["my-model"] == "mock" and listed["gpt-4o-mini"] == "openai-eu"


def test_mock_mode_serves_every_model_from_the_mock() -> None:
    config = load_config(env={"MOCK_MODE": "true"})
    assert config.routing.mock_mode is True
    assert load_config(env={"MOCK_MODE": "false"}).routing.mock_mode is False
    assert load_config(env={}).routing.mock_mode is False
    planner = Planner(config.model_copy(update={"models": CONFIG.models, "providers": CONFIG.providers}))
    assert planner.plan("gpt-4o-mini").candidates == (Candidate("mock", "gpt-4o-mini"),)
    assert _ids(planner, "gemini-2.5-pro") == ["mock:gemini-2.5-pro"]
    assert _ids(planner, "default-chat") == ["mock:claude-haiku"]
    assert _ids(planner, "anthropic:claude-x") == ["mock:claude-x"]
    assert _ids(planner, "anything-at-all") == ["mock:anything-at-all"]
    # Each mock still stands in for the provider it replaces: constraints and policies name that one.
    assert [c.routed_provider for c in planner.plan("claude-3.5-sonnet").candidates] == ["anthropic"]
    assert [c.routed_provider for c in planner.plan("anything-at-all").candidates] == ["mock"]
    (kept,) = allow_only(planner.plan("claude-3.5-sonnet").candidates, ["anthropic"], "claude-3.5-sonnet")
    assert kept.provider == "mock"
    with pytest.raises(GatewayError):
        allow_only(planner.plan("gpt-4.1").candidates, ["anthropic"], "gpt-4.1")
    with pytest.raises(ConfigError) as info:
        load_config(env={"MOCK_MODE": "maybe"})
    assert "routing.mock_mode" in str(info.value)


class CountingStub:
    """A GetRouteTable that counts calls and can be told to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.routes: list[auth_pb2.Route] = []
        self.failing = False

    async def GetRouteTable(
        self, request: auth_pb2.GetRouteTableRequest, **options: object
    ) -> auth_pb2.GetRouteTableResponse:
        self.calls += 1
        if self.failing:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "auth is away"
            )
        return auth_pb2.GetRouteTableResponse(routes=self.routes)


async def _until(predicate: object, limit_s: float = 3.0) -> None:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - started < limit_s, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_the_route_table_refreshes_once_per_interval_not_per_request() -> None:
    stub = CountingStub()
    stub.routes = [auth_pb2.Route(model="gpt-4o", provider="openai-eu")]
    table = RouteTable(stub, interval_s=0.1)  # type: ignore[arg-type]
    planner = Planner(CONFIG, overrides=table.current)
    started = time.monotonic()
    await table.start()
    try:
        assert stub.calls == 1  # loaded before the router serves
        assert _ids(planner, "gpt-4o") == ["openai-eu:gpt-4o"]
        plans = 0
        while time.monotonic() - started < 0.45:
            planner.plan("gpt-4o")
            plans += 1
            await asyncio.sleep(0)
        elapsed = time.monotonic() - started
        assert plans > 100
        assert stub.calls <= 1 + elapsed / 0.1 + 1, (stub.calls, elapsed)
        # A change in auth shows at the next tick; a failed refresh keeps the last table.
        stub.routes = [auth_pb2.Route(model="gpt-4o", provider="mock", upstream_model="m")]
        await _until(lambda: _ids(planner, "gpt-4o") == ["mock:m"])
        stub.failing = True
        calls = stub.calls
        await _until(lambda: stub.calls >= calls + 2)
        assert _ids(planner, "gpt-4o") == ["mock:m"]
        stub.failing = False
        stub.routes = []
        await _until(lambda: _ids(planner, "gpt-4o") == ["mock:aliased-4o"])
    finally:
        await table.stop()
    calls = stub.calls
    await asyncio.sleep(0.25)
    assert stub.calls == calls  # stopped means stopped
