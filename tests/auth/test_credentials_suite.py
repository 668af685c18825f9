"""End to end on the real processes: a tenant stores a credential through the edge's
``/admin/v1/credentials`` route, the providers identity (and only it) resolves it in clear over
mutual TLS, and neither the auth database nor any process's log holds the secret."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc
from suite.supervisor import Suite
from tests.servers import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Suite, str, str]]:
    """The suite with tenant acme (its key) and an admin key, and a KEK of its own."""
    data = tmp_path_factory.mktemp("credentials-suite")
    key, admin_key = (f"gw-{secrets.token_urlsafe(32)}" for _ in range(2))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))},
        "GATEWAY_TENANT_KEYS": f"acme:{key}",
        "GATEWAY_ADMIN_KEY": admin_key,
        "GATEWAY_CREDENTIALS_KEK": f"suite:{base64.b64encode(os.urandom(32)).decode()}",
    }
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    running = Suite(data_dir=data, ports=ports, env=env)
    running.start()
    try:
        yield running, key, admin_key
    finally:
        running.stop()


async def _resolve(suite: Suite, identity: str) -> credentials_pb2.ResolveCredentialsResponse:
    async with suite.channel("auth", identity) as channel:
        return await credentials_pb2_grpc.CredentialServiceStub(channel).ResolveCredentials(
            credentials_pb2.ResolveCredentialsRequest(tenant_id="acme", provider="openai"), timeout=10
        )


def test_a_credential_stored_through_the_edge_is_resolved_only_by_providers_and_never_in_clear(
    suite: tuple[Suite, str, str],
) -> None:
    running, key, admin_key = suite
    secret = f"upstream-{secrets.token_hex(24)}"
    created = httpx.post(
        f"{running.edge_url}/admin/v1/credentials",
        headers={"Authorization": f"Bearer {key}"},
        json={"provider": "openai", "name": "byok", "secret": {"api_key": secret}},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    assert created.json()["credential"]["secret_last_four"] == secret[-4:] and secret not in created.text
    listed = httpx.get(
        f"{running.edge_url}/admin/v1/credentials",
        params={"tenant_id": "acme"},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    assert listed.status_code == 200 and secret not in listed.text
    assert [c["name"] for c in listed.json()["credentials"]] == ["byok"]

    answer = asyncio.run(_resolve(running, "providers"))
    assert [c.secret.api_key for c in answer.credentials] == [secret]
    for identity in ("edge", "router"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(_resolve(running, identity))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    at_rest = b"".join(p.read_bytes() for p in Path(running.data_dir).glob("auth.db*"))
    assert at_rest and secret.encode() not in at_rest
    logs = b"".join(p.read_bytes() for p in running.log_dir.glob("*.log"))
    assert b"credential cred_" in logs  # the auth service did log the creation (by id)
    assert secret.encode() not in logs
