"""The credential admin API as operators reach it: the edge's generated ``/admin/v1/credentials``
routes (HTTP/JSON to gRPC) and the ``gateway credentials`` commands, against a real auth service."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from edge.app import create_app
from edge.state import EdgeState
from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc
from gateway_cli.credentials import format_credentials
from gateway_cli.main import main
from gateway_common.config import load_config
from gateway_common.db import async_database_url
from services.auth.accounts import Accounts, utc_now
from services.auth.credentials.domain import Credentials
from services.auth.credentials.keyring import KEK_ENV, parse_keks
from services.auth.credentials.servicer import CredentialServicer
from services.auth.credentials.store import SqlCredentialStore
from services.auth.settings import AuthSecrets, BootstrapKey
from services.auth.storage.sql import SqlStore
from tests.auth.helpers import RunningAuth, auth_config, bearer, running_auth

ADMIN = "gw-admin-api-admin-key-0123456789abcdef"
ACME = "gw-admin-api-acme-key-0123456789abcdefg"


@pytest.fixture
async def auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningAuth]:
    """A fresh auth service (SQLite) with an admin key and tenant acme."""
    monkeypatch.setenv(KEK_ENV, base64.b64encode(bytes(range(32))).decode())
    # Both clients below run in-process without TLS; never the certificates a `make up` left here.
    monkeypatch.setenv("GATEWAY_INTERNAL_TLS", "off")
    async with running_auth(
        auth_config(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path),
        AuthSecrets((BootstrapKey("acme", ACME),), ADMIN),
    ) as running:
        yield running


async def test_the_edge_routes_create_list_update_rotate_and_delete(auth: RunningAuth) -> None:
    config = load_config(env={"GATEWAY_INTERNAL_TLS": "off", "GATEWAY_AUTH_ADDR": f"127.0.0.1:{auth.port}"})
    app = create_app(config)
    app.state.edge = EdgeState(config)
    secret, rotated = (f"upstream-{secrets.token_hex(16)}" for _ in range(2))
    as_acme = {"Authorization": f"Bearer {ACME}"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as http:
            created = await http.post(
                "/admin/v1/credentials",
                headers=as_acme,
                json={
                    "provider": "openai",
                    "name": "main",
                    "priority": 2,
                    "limits": [{"unit": "UNIT_REQUESTS", "window": "WINDOW_MINUTE", "limit": 60}],
                    "secret": {"api_key": secret},
                },
            )
            assert created.status_code == 200, created.text
            credential = created.json()["credential"]
            assert credential["tenant_id"] == "acme" and credential["secret_last_four"] == secret[-4:]
            assert secret not in created.text
            path = f"/admin/v1/credentials/{credential['credential_id']}"

            listed = await http.get("/admin/v1/credentials", params={"provider": "openai"}, headers=as_acme)
            assert listed.status_code == 200 and [c["name"] for c in listed.json()["credentials"]] == ["main"]

            patched = await http.patch(path, headers=as_acme, json={"state": "CREDENTIAL_STATE_DISABLED"})
            assert patched.status_code == 200 and patched.json()["credential"]["state"] == "CREDENTIAL_STATE_DISABLED"

            turned = await http.post(f"{path}:rotate", headers=as_acme, json={"secret": {"api_key": rotated}})
            assert turned.status_code == 200, turned.text
            assert turned.json()["credential"]["secret_last_four"] == rotated[-4:] and rotated not in turned.text

            other = await http.get("/admin/v1/credentials", params={"tenant_id": "admin"}, headers=as_acme)
            assert other.status_code == 403 and other.json()["error"]["type"] == "permission_error"
            nobody = await http.get("/admin/v1/credentials")
            assert nobody.status_code == 401
            rewrap = await http.post(
                "/admin/v1/credentials:rewrap", headers={"Authorization": f"Bearer {ADMIN}"}, json={}
            )
            assert rewrap.status_code == 200 and rewrap.json()["remaining"] == 0

            deleted = await http.delete(path, headers=as_acme)
            assert deleted.status_code == 200, deleted.text
            gone = await http.delete(path, headers=as_acme)
            assert gone.status_code == 404 and gone.json()["error"]["param"] == "credential_id"
    finally:
        await app.state.edge.close()


async def gateway(
    auth: RunningAuth, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    """Run ``gateway credentials …`` in a thread against ``auth``, ``stdin`` piped in."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    status = await asyncio.to_thread(
        main, ["credentials", argv[0], "--address", f"127.0.0.1:{auth.port}", "--admin-key", ADMIN, *argv[1:]]
    )
    out, err = capsys.readouterr()
    return status, out, err


async def test_cli_credentials_commands(
    auth: RunningAuth, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, rotated, access = (f"upstream-{secrets.token_hex(16)}" for _ in range(3))
    status, out, err = await gateway(
        auth, capsys, monkeypatch, "add", "--tenant", "acme", "--provider", "openai", "--rpm", "500", stdin=secret
    )
    assert status == 0, err
    assert "Stored credential cred_" in out and "500 req/min" in out and "…" + secret[-4:] in out
    credential_id = out.split()[2].rstrip(":")
    tokens = json.dumps({"access_token": access, "refresh_token": "r" * 30, "expires_at": "2031-01-01T00:00:00Z"})
    status, out, err = await gateway(
        auth, capsys, monkeypatch, "add", "--tenant", "acme", "--provider", "gemini-cli", "--oauth", stdin=tokens
    )
    assert status == 0, err
    assert "oauth" in out and "2031-01-01 00:00:00Z" in out

    status, out, err = await gateway(auth, capsys, monkeypatch, "disable", credential_id)
    assert status == 0 and "disabled" in out
    status, out, err = await gateway(auth, capsys, monkeypatch, "set-limits", credential_id, "--tpd", "2000000")
    assert status == 0 and "2000000 tok/day" in out and "500 req/min" not in out
    status, out, err = await gateway(auth, capsys, monkeypatch, "rotate", credential_id, stdin=rotated)
    assert status == 0 and "…" + rotated[-4:] in out
    status, out, err = await gateway(auth, capsys, monkeypatch, "enable", credential_id)
    assert status == 0 and "active" in out

    status, out, err = await gateway(auth, capsys, monkeypatch, "list", "--tenant", "acme")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["CREDENTIAL_ID", "TENANT", "PROVIDER"] and "STATE" in lines[0]
    assert len(lines) == 3 and any(credential_id in line and "active" in line for line in lines)
    status, out, err = await gateway(auth, capsys, monkeypatch, "list", "--json")
    assert status == 0 and len(json.loads(out)["credentials"]) == 2

    status, out, err = await gateway(auth, capsys, monkeypatch, "rewrap")
    assert status == 0 and "0 left" in out

    status, out, err = await gateway(auth, capsys, monkeypatch, "add", "--provider", "openai", stdin="")
    assert status == 2 and "no secret given" in err
    status, out, err = await gateway(auth, capsys, monkeypatch, "add", "--provider", "x", "--oauth", stdin="{not json")
    assert status == 2 and "{not json" not in err
    status, out, err = await gateway(auth, capsys, monkeypatch, "delete", credential_id)
    assert status == 0 and f"Deleted credential {credential_id}." in out
    status, out, err = await gateway(auth, capsys, monkeypatch, "delete", credential_id)
    assert status == 1 and "NOT_FOUND" in err
    for value in (secret, rotated, access):
        assert value not in out and value not in err


async def test_listings_show_cooldowns_from_the_rate_limit_seam(auth: RunningAuth, tmp_path: Path) -> None:
    """The servicer fills ``cooldown_until`` from an injected lookup (the rate limit side wires it)."""
    engine = create_async_engine(async_database_url(f"sqlite:///{tmp_path / 'auth.db'}"))
    keyring = parse_keks(base64.b64encode(bytes(range(32))).decode(), KEK_ENV)
    credentials = Credentials(SqlCredentialStore(engine), keyring, utc_now, 0.0)
    until = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)
    asked: list[list[str]] = []

    async def cooldowns(ids: Sequence[str]) -> Mapping[str, datetime]:
        asked.append(list(ids))
        return {ids[0]: until}

    server = grpc.aio.server()
    credentials_pb2_grpc.add_CredentialServiceServicer_to_server(
        CredentialServicer(Accounts(SqlStore(engine)), credentials, cooldowns), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            api = credentials_pb2_grpc.CredentialServiceStub(channel)
            for priority in (0, 1):
                await api.CreateCredential(
                    credentials_pb2.CreateCredentialRequest(
                        provider="openai",
                        priority=priority,
                        secret=credentials_pb2.CredentialSecret(api_key=f"upstream-{secrets.token_hex(16)}"),
                    ),
                    metadata=bearer(ACME),
                )
            listed = (
                await api.ListCredentials(credentials_pb2.ListCredentialsRequest(), metadata=bearer(ACME))
            ).credentials
    finally:
        await server.stop(None)
        await engine.dispose()
    assert asked == [[c.credential_id for c in listed]]
    assert listed[0].cooldown_until.ToDatetime(tzinfo=UTC) == until and not listed[1].HasField("cooldown_until")
    table = format_credentials(listed)
    assert "cooling down until 2031-01-01 12:00:00Z" in table.splitlines()[1]
    assert table.splitlines()[2].endswith("active")
