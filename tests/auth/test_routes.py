"""Route overrides in auth's database: the admin RPCs, their checks, the router's table, and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.auth.v1 import auth_pb2
from gateway_cli.main import main
from gateway_common.config import GatewayConfig
from gateway_common.errors import Reason
from services.auth.settings import AuthSecrets, BootstrapKey
from tests.auth.helpers import RunningAuth, auth_config, bearer, gateway_error, running_auth

ADMIN = "gw-routes-admin-key-0123456789abcdefgh"
ACME = "gw-routes-acme-key-0123456789abcdefghi"
SECRETS = AuthSecrets(admin_key=ADMIN, tenant_keys=(BootstrapKey("acme", ACME),))


def _config(database_url: str, folder: Path) -> GatewayConfig:
    """auth_config plus a provider of the operator's own, openai-eu."""
    base = auth_config(database_url, folder).model_dump()
    base["providers"] = {"openai-eu": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}}
    return GatewayConfig.model_validate(base)


@pytest.fixture
async def auth(database_url: str, tmp_path: Path) -> AsyncIterator[RunningAuth]:
    """A fresh auth service (SQLite, and PostgreSQL under the postgres marker) knowing openai-eu."""
    async with running_auth(_config(database_url, tmp_path), SECRETS) as running:
        yield running


async def _refusal(call: object) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = gateway_error(caught.value)
    return error.code, error.reason, dict(error.metadata)


async def test_set_replace_list_delete_and_the_router_table(auth: RunningAuth) -> None:
    admin = bearer(ADMIN)
    stored = await auth.stub.SetRoute(auth_pb2.SetRouteRequest(model="gpt-4o", provider="openai-eu"), metadata=admin)
    assert (stored.route.model, stored.route.provider, stored.route.upstream_model) == ("gpt-4o", "openai-eu", "")
    assert stored.route.HasField("update_time")
    await auth.stub.SetRoute(auth_pb2.SetRouteRequest(model="claude-x", provider="mock"), metadata=admin)
    # Setting again replaces: one row per model id.
    await auth.stub.SetRoute(
        auth_pb2.SetRouteRequest(model="gpt-4o", provider="openai", upstream_model="gpt-4o-2024-08-06"),
        metadata=admin,
    )
    listed = await auth.stub.ListRoutes(auth_pb2.ListRoutesRequest(), metadata=admin)
    assert [(r.model, r.provider, r.upstream_model) for r in listed.routes] == [
        ("claude-x", "mock", ""),
        ("gpt-4o", "openai", "gpt-4o-2024-08-06"),
    ]
    # The router's RPC needs no key (the service identity is its check) and sees the same table.
    table = await auth.stub.GetRouteTable(auth_pb2.GetRouteTableRequest())
    assert list(table.routes) == list(listed.routes)
    removed = await auth.stub.DeleteRoute(auth_pb2.DeleteRouteRequest(model="claude-x"), metadata=admin)
    assert removed.route.provider == "mock"
    table = await auth.stub.GetRouteTable(auth_pb2.GetRouteTableRequest())
    assert [r.model for r in table.routes] == ["gpt-4o"]


async def test_bad_routes_are_refused_naming_the_field_and_change_nothing(auth: RunningAuth) -> None:
    admin = bearer(ADMIN)
    code, reason, metadata = await _refusal(
        auth.stub.SetRoute(auth_pb2.SetRouteRequest(model="gpt-4o", provider="openai-us"), metadata=admin)
    )
    assert (code, reason, metadata["param"]) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST, "provider")
    for bad in ("", "openai:gpt-4o", "has space", "x" * 201):
        code, _, metadata = await _refusal(
            auth.stub.SetRoute(auth_pb2.SetRouteRequest(model=bad, provider="openai"), metadata=admin)
        )
        assert (code, metadata["param"]) == (grpc.StatusCode.INVALID_ARGUMENT, "model"), bad
    code, _, metadata = await _refusal(
        auth.stub.SetRoute(
            auth_pb2.SetRouteRequest(model="gpt-4o", provider="openai", upstream_model="a b"), metadata=admin
        )
    )
    assert (code, metadata["param"]) == (grpc.StatusCode.INVALID_ARGUMENT, "upstream_model")
    code, _, metadata = await _refusal(
        auth.stub.DeleteRoute(auth_pb2.DeleteRouteRequest(model="gpt-4o"), metadata=admin)
    )
    assert (code, metadata["param"]) == (grpc.StatusCode.NOT_FOUND, "model")
    assert list((await auth.stub.GetRouteTable(auth_pb2.GetRouteTableRequest())).routes) == []


async def test_route_admin_needs_the_admin_scope(auth: RunningAuth) -> None:
    set_request = auth_pb2.SetRouteRequest(model="gpt-4o", provider="openai")
    assert (await _refusal(auth.stub.SetRoute(set_request)))[0] == grpc.StatusCode.UNAUTHENTICATED
    for call in (
        auth.stub.SetRoute(set_request, metadata=bearer(ACME)),
        auth.stub.ListRoutes(auth_pb2.ListRoutesRequest(), metadata=bearer(ACME)),
        auth.stub.DeleteRoute(auth_pb2.DeleteRouteRequest(model="gpt-4o"), metadata=bearer(ACME)),
    ):
        assert (await _refusal(call))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert list((await auth.stub.GetRouteTable(auth_pb2.GetRouteTableRequest())).routes) == []


async def _gateway(
    auth: RunningAuth, capsys: pytest.CaptureFixture[str], config: Path, *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    status = await asyncio.to_thread(
        main,
        [*argv[:2], "--address", f"127.0.0.1:{auth.port}", "--admin-key", ADMIN, "--config", str(config), *argv[2:]],
    )
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_cli_routes_set_list_delete(
    auth: RunningAuth, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI reads the same configuration file as the services; TLS is off for an in-process auth.
    config = tmp_path / "gateway.yaml"
    config.write_text("tls:\n  internal: 'off'\n")
    status, out, err = await _gateway(auth, capsys, config, "routes", "set", "gpt-4o", "openai-eu")
    assert status == 0, err
    assert "gpt-4o -> openai-eu" in out
    status, out, err = await _gateway(
        auth, capsys, config, "routes", "set", "gemini-pro", "mock", "--upstream-model", "gemini-echo"
    )
    assert status == 0, err
    status, out, _ = await _gateway(auth, capsys, config, "routes", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "PROVIDER", "UPSTREAM", "MODEL", "UPDATED"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["gemini-pro", "mock", "gemini-echo"],
        ["gpt-4o", "openai-eu", "gpt-4o"],
    ]
    status, out, err = await _gateway(auth, capsys, config, "routes", "set", "gpt-4o", "openai-us")
    assert status == 1
    assert "openai-us" in err and "provider" in err
    status, out, _ = await _gateway(auth, capsys, config, "routes", "delete", "gpt-4o")
    assert (status, out.strip()) == (0, "Route deleted: gpt-4o -> openai-eu.")
    status, _, err = await _gateway(auth, capsys, config, "routes", "delete", "gpt-4o")
    assert status == 1 and "gpt-4o" in err
    status, out, _ = await _gateway(auth, capsys, config, "routes", "list", "--json")
    assert status == 0 and '"gemini-pro"' in out and '"gpt-4o"' not in out
