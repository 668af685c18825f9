"""The auth service through a real in-process gRPC server, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
import sys
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway_common.config import ConfigError
from gateway_common.db import async_database_url
from gateway_common.errors import Reason
from services.auth.keys import hash_key
from services.auth.server import build
from services.auth.settings import AuthSecrets, BootstrapKey
from tests.auth.helpers import FakeClock, RunningAuth, auth_config, bearer, gateway_error, running_auth

ADMIN = "gw-test-admin-key-0123456789abcdef"
ACME = "sk-acme-bootstrap-key-0001"
SECRETS = AuthSecrets(tenant_keys=(BootstrapKey("acme", ACME),), admin_key=ADMIN)
REPO_ROOT = Path(__file__).resolve().parents[2]
RPM_60 = quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_MINUTE, limit=60)


async def _authenticate(auth: RunningAuth, key: str) -> auth_pb2.AuthenticateResponse:
    return await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=key))


async def _refusal(call: Awaitable[object]) -> tuple[grpc.StatusCode, str, str]:
    """(code, reason, message) of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = gateway_error(caught.value)
    return error.code, str(error.reason), error.message


async def test_serving_only_after_migrations_and_bootstrap(database_url: str, tmp_path: Path) -> None:
    async with running_auth(auth_config(database_url, tmp_path), SECRETS) as auth:
        health = health_pb2_grpc.HealthStub(auth.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service="gateway.auth.v1.AuthService"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        engine = create_async_engine(async_database_url(database_url))
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version_auth"))).scalar_one()
        await engine.dispose()
        assert version == "0003"


async def test_bootstrap_from_environment(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TENANT_KEYS", f"acme:{ACME},beta:sk-beta-key-0002")
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", ADMIN)
    config = auth_config(database_url, tmp_path, cache_ttl_s=1.5)
    async with running_auth(config) as auth:
        answer = await _authenticate(auth, ACME)
        assert answer.principal.tenant_id == "acme"
        assert list(answer.principal.scopes) == ["chat", "embeddings", "usage:read"]
        assert answer.cache_ttl_seconds == 2
        assert (await _authenticate(auth, "sk-beta-key-0002")).principal.tenant_id == "beta"
        admin = (await _authenticate(auth, ADMIN)).principal
        assert admin.tenant_id == "admin"
        assert list(admin.scopes) == ["chat", "embeddings", "usage:read", "admin"]
    # A restart upserts the same keys: nothing doubles, they still work.
    async with running_auth(config) as auth:
        keys = await auth.stub.ListKeys(auth_pb2.ListKeysRequest(), metadata=bearer(ADMIN))
        assert sorted(k.tenant_id for k in keys.keys) == ["acme", "admin", "beta"]
        assert (await _authenticate(auth, ACME)).principal.tenant_id == "acme"
    assert not (tmp_path / "demo").exists()


async def test_demo_key_written_once_and_reused_on_restart(database_url: str, tmp_path: Path) -> None:
    config = auth_config(database_url, tmp_path)
    key_file = tmp_path / "demo" / "key"
    async with running_auth(config, AuthSecrets()) as auth:
        demo = key_file.read_text().strip()
        assert demo.startswith("gw-")
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        principal = (await _authenticate(auth, demo)).principal
        assert principal.tenant_id == "demo"
        assert list(principal.scopes) == ["chat", "embeddings", "usage:read", "admin"]
    async with running_auth(config, AuthSecrets()) as auth:
        assert key_file.read_text().strip() == demo
        keys = await auth.stub.ListKeys(auth_pb2.ListKeysRequest(), metadata=bearer(demo))
        assert [k.tenant_id for k in keys.keys] == ["demo"]


async def test_demo_key_file_restores_the_key_into_an_empty_database(tmp_path: Path) -> None:
    key_file = tmp_path / "demo" / "key"
    async with running_auth(auth_config(f"sqlite:///{tmp_path / 'one.db'}", tmp_path), AuthSecrets()):
        demo = key_file.read_text().strip()
    async with running_auth(auth_config(f"sqlite:///{tmp_path / 'two.db'}", tmp_path), AuthSecrets()) as auth:
        assert (await _authenticate(auth, demo)).principal.tenant_id == "demo"


async def test_no_demo_key_when_tenant_keys_or_other_keys_exist(database_url: str, tmp_path: Path) -> None:
    config = auth_config(database_url, tmp_path)
    async with running_auth(config, AuthSecrets(admin_key=ADMIN)):
        pass
    assert not (tmp_path / "demo" / "key").exists()
    async with running_auth(config, AuthSecrets(tenant_keys=(BootstrapKey("acme", ACME),))) as auth:
        keys = await auth.stub.ListKeys(auth_pb2.ListKeysRequest(), metadata=bearer(ADMIN))
        assert "demo" not in {k.tenant_id for k in keys.keys}
    assert not (tmp_path / "demo" / "key").exists()


def test_malformed_tenant_keys_stop_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TENANT_KEYS", "acme:sk-good,sk-very-secret-value")
    with pytest.raises(ConfigError) as caught:
        build(auth_config(f"sqlite:///{tmp_path / 'a.db'}", tmp_path))
    assert "GATEWAY_TENANT_KEYS: entry 2" in str(caught.value)
    assert "sk-very-secret-value" not in str(caught.value)


async def test_authenticate_ok_missing_unknown_expired_revoked(database_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    async with running_auth(auth_config(database_url, tmp_path), SECRETS, clock) as auth:
        expire = timestamp_pb2.Timestamp()
        expire.FromDatetime(clock.now + timedelta(hours=1))
        created = await auth.stub.CreateKey(
            auth_pb2.CreateKeyRequest(
                tenant_id="acme",
                name="ci",
                expire_time=expire,
                allowed_models=["mock:*"],
                limits=auth_pb2.Limits(quotas=[RPM_60]),
            ),
            metadata=bearer(ADMIN),
        )
        secret = created.secret
        assert secret.startswith("gw-") and created.key.prefix == secret[:8]
        principal = (await _authenticate(auth, secret)).principal
        assert (principal.tenant_id, principal.key_id, principal.key_name) == ("acme", created.key.key_id, "ci")
        assert list(principal.scopes) == ["chat", "embeddings"]
        assert list(principal.allowed_models) == ["mock:*"]
        assert list(principal.key_limits.quotas) == [RPM_60]

        code, reason, message = await _refusal(_authenticate(auth, ""))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY)
        assert "API key" in message
        code, reason, message = await _refusal(_authenticate(auth, "gw-not-a-real-key"))
        assert (code, reason, message) == (
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.INVALID_API_KEY,
            "Incorrect API key provided.",
        )

        clock.advance(timedelta(hours=2))
        assert (await _refusal(_authenticate(auth, secret)))[1] == Reason.INVALID_API_KEY

        other = await auth.stub.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="acme"), metadata=bearer(ADMIN))
        assert (await _authenticate(auth, other.secret)).principal.key_id == other.key.key_id
        revoked = await auth.stub.RevokeKey(auth_pb2.RevokeKeyRequest(key_id=other.key.key_id), metadata=bearer(ADMIN))
        assert revoked.key.HasField("revoke_time")
        assert (await _refusal(_authenticate(auth, other.secret)))[1] == Reason.INVALID_API_KEY


async def test_principal_inherits_key_defaults_and_carries_tenant_limits_and_policy(
    database_url: str, tmp_path: Path
) -> None:
    async with running_auth(auth_config(database_url, tmp_path), SECRETS) as auth:
        budget = quota_pb2.Quota(unit=quota_pb2.UNIT_COST_MICRO_USD, window=quota_pb2.WINDOW_MONTH, limit=50_000_000)
        tenant = auth_pb2.Tenant(
            tenant_id="gamma",
            display_name="Gamma",
            limits=auth_pb2.Limits(quotas=[budget], max_concurrent_requests=8),
            key_defaults=auth_pb2.Limits(quotas=[RPM_60]),
            policy=auth_pb2.Policy(deny_models=["openai:gpt-4*"], max_prompt_tokens=2000, log_prompts=True),
        )
        await auth.stub.CreateTenant(auth_pb2.CreateTenantRequest(tenant=tenant), metadata=bearer(ADMIN))
        created = await auth.stub.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="gamma"), metadata=bearer(ADMIN))
        principal = (await _authenticate(auth, created.secret)).principal
        assert principal.key_limits == tenant.key_defaults
        assert principal.tenant_limits == tenant.limits
        assert principal.policy == tenant.policy
        assert not created.key.limits.quotas  # the key itself has none: it inherits

        new_defaults = auth_pb2.Limits(
            quotas=[quota_pb2.Quota(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_DAY, limit=9)]
        )
        await auth.stub.UpdateTenant(
            auth_pb2.UpdateTenantRequest(tenant_id="gamma", key_defaults=new_defaults), metadata=bearer(ADMIN)
        )
        principal = (await _authenticate(auth, created.secret)).principal
        assert principal.key_limits == new_defaults
        assert principal.tenant_limits == tenant.limits  # unset in the update: kept

        own = auth_pb2.Limits(max_concurrent_requests=1)
        updated = await auth.stub.UpdateKey(
            auth_pb2.UpdateKeyRequest(key_id=created.key.key_id, limits=own, scopes=["chat", "usage:read"]),
            metadata=bearer(ADMIN),
        )
        assert list(updated.key.scopes) == ["chat", "usage:read"]
        principal = (await _authenticate(auth, created.secret)).principal
        assert principal.key_limits == own
        assert list(principal.allowed_models) == []


async def test_admin_calls_need_a_valid_key_with_the_admin_scope(database_url: str, tmp_path: Path) -> None:
    async with running_auth(auth_config(database_url, tmp_path), SECRETS) as auth:
        request = auth_pb2.ListTenantsRequest()
        assert (await _refusal(auth.stub.ListTenants(request)))[:2] == (
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.MISSING_API_KEY,
        )
        assert (await _refusal(auth.stub.ListTenants(request, metadata=(("authorization", ADMIN),))))[:2] == (
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.MISSING_API_KEY,
        )
        assert (await _refusal(auth.stub.ListTenants(request, metadata=bearer("gw-wrong"))))[:2] == (
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.INVALID_API_KEY,
        )
        code, reason, _ = await _refusal(
            auth.stub.CreateTenant(
                auth_pb2.CreateTenantRequest(tenant=auth_pb2.Tenant(tenant_id="evil")), metadata=bearer(ACME)
            )
        )
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.PERMISSION_DENIED)
        for call in (
            auth.stub.ListKeys(auth_pb2.ListKeysRequest(), metadata=bearer(ACME)),
            auth.stub.RevokeKey(auth_pb2.RevokeKeyRequest(key_id="key_x"), metadata=bearer(ACME)),
            auth.stub.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="acme", scopes=["admin"]), metadata=bearer(ACME)),
        ):
            assert (await _refusal(call))[0] == grpc.StatusCode.PERMISSION_DENIED
        tenants = await auth.stub.ListTenants(request, metadata=bearer(ADMIN))
        assert [t.tenant_id for t in tenants.tenants] == ["acme", "admin"]


async def test_bad_input_names_the_field_and_changes_nothing(database_url: str, tmp_path: Path) -> None:
    async with running_auth(auth_config(database_url, tmp_path), SECRETS) as auth:
        admin = bearer(ADMIN)
        before_tenants = await auth.stub.ListTenants(auth_pb2.ListTenantsRequest(), metadata=admin)
        before_keys = await auth.stub.ListKeys(auth_pb2.ListKeysRequest(include_revoked=True), metadata=admin)
        no_unit = auth_pb2.Limits(quotas=[quota_pb2.Quota(window=quota_pb2.WINDOW_DAY, limit=1)])
        negative = auth_pb2.Limits(
            quotas=[RPM_60, quota_pb2.Quota(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_DAY, limit=-5)]
        )
        cases: list[tuple[Awaitable[object], str]] = [
            (
                auth.stub.CreateTenant(
                    auth_pb2.CreateTenantRequest(tenant=auth_pb2.Tenant(tenant_id="Bad Id")), metadata=admin
                ),
                "tenant.tenant_id",
            ),
            (
                auth.stub.CreateTenant(
                    auth_pb2.CreateTenantRequest(tenant=auth_pb2.Tenant(tenant_id="new", key_defaults=no_unit)),
                    metadata=admin,
                ),
                "tenant.key_defaults.quotas[0].unit",
            ),
            (
                auth.stub.CreateTenant(
                    auth_pb2.CreateTenantRequest(
                        tenant=auth_pb2.Tenant(
                            tenant_id="new",
                            limits=auth_pb2.Limits(quotas=[quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, limit=1)]),
                        )
                    ),
                    metadata=admin,
                ),
                "tenant.limits.quotas[0].window",
            ),
            (
                auth.stub.CreateTenant(
                    auth_pb2.CreateTenantRequest(
                        tenant=auth_pb2.Tenant(tenant_id="new", policy=auth_pb2.Policy(max_prompt_tokens=0))
                    ),
                    metadata=admin,
                ),
                "tenant.policy.max_prompt_tokens",
            ),
            (
                auth.stub.CreateKey(
                    auth_pb2.CreateKeyRequest(tenant_id="acme", scopes=["chat", "root"]), metadata=admin
                ),
                "scopes[1]",
            ),
            (
                auth.stub.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="acme", limits=negative), metadata=admin),
                "limits.quotas[1].limit",
            ),
            (
                auth.stub.CreateKey(
                    auth_pb2.CreateKeyRequest(tenant_id="acme", allowed_models=["ok:*", "a b"]), metadata=admin
                ),
                "allowed_models[1]",
            ),
            (
                auth.stub.CreateKey(
                    auth_pb2.CreateKeyRequest(tenant_id="acme", expire_time=timestamp_pb2.Timestamp(seconds=1)),
                    metadata=admin,
                ),
                "expire_time",
            ),
            (
                auth.stub.UpdateTenant(auth_pb2.UpdateTenantRequest(tenant_id="acme", limits=no_unit), metadata=admin),
                "limits.quotas[0].unit",
            ),
            (
                auth.stub.UpdateKey(
                    auth_pb2.UpdateKeyRequest(key_id=before_keys.keys[0].key_id, scopes=["admin", "everything"]),
                    metadata=admin,
                ),
                "scopes[1]",
            ),
            (auth.stub.RevokeKey(auth_pb2.RevokeKeyRequest(), metadata=admin), "key_id"),
        ]
        for call, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            error = gateway_error(caught.value)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT, field
            assert [v.field for v in error.field_violations] == [field]
            assert error.metadata["param"] == field

        assert (await _refusal(auth.stub.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="nobody"), metadata=admin)))[
            0
        ] == grpc.StatusCode.NOT_FOUND
        assert (
            await _refusal(
                auth.stub.CreateTenant(
                    auth_pb2.CreateTenantRequest(tenant=auth_pb2.Tenant(tenant_id="acme", display_name="Again")),
                    metadata=admin,
                )
            )
        )[0] == grpc.StatusCode.ALREADY_EXISTS
        assert (
            await _refusal(auth.stub.UpdateTenant(auth_pb2.UpdateTenantRequest(tenant_id="nobody"), metadata=admin))
        )[0] == grpc.StatusCode.NOT_FOUND
        assert (await _refusal(auth.stub.RevokeKey(auth_pb2.RevokeKeyRequest(key_id="key_nope"), metadata=admin)))[
            0
        ] == grpc.StatusCode.NOT_FOUND
        assert (await _refusal(auth.stub.ListKeys(auth_pb2.ListKeysRequest(tenant_id="nobody"), metadata=admin)))[
            0
        ] == grpc.StatusCode.NOT_FOUND

        assert await auth.stub.ListTenants(auth_pb2.ListTenantsRequest(), metadata=admin) == before_tenants
        assert await auth.stub.ListKeys(auth_pb2.ListKeysRequest(include_revoked=True), metadata=admin) == before_keys


async def test_list_update_and_revoke_keys(database_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    async with running_auth(auth_config(database_url, tmp_path), SECRETS, clock) as auth:
        admin = bearer(ADMIN)
        await auth.stub.CreateTenant(
            auth_pb2.CreateTenantRequest(tenant=auth_pb2.Tenant(tenant_id="beta")), metadata=admin
        )
        first = await auth.stub.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="beta", name="one"), metadata=admin)
        clock.advance(timedelta(seconds=1))
        second = await auth.stub.CreateKey(auth_pb2.CreateKeyRequest(tenant_id="beta", name="two"), metadata=admin)
        listed = await auth.stub.ListKeys(auth_pb2.ListKeysRequest(tenant_id="beta"), metadata=admin)
        assert [k.name for k in listed.keys] == ["one", "two"]
        assert all(not k.HasField("revoke_time") for k in listed.keys)

        await auth.stub.RevokeKey(auth_pb2.RevokeKeyRequest(key_id=first.key.key_id), metadata=admin)
        again = await auth.stub.RevokeKey(auth_pb2.RevokeKeyRequest(key_id=first.key.key_id), metadata=admin)
        assert again.key.HasField("revoke_time")
        listed = await auth.stub.ListKeys(auth_pb2.ListKeysRequest(tenant_id="beta"), metadata=admin)
        assert [k.key_id for k in listed.keys] == [second.key.key_id]
        listed = await auth.stub.ListKeys(
            auth_pb2.ListKeysRequest(tenant_id="beta", include_revoked=True), metadata=admin
        )
        assert len(listed.keys) == 2
        code, _, _ = await _refusal(
            auth.stub.UpdateKey(auth_pb2.UpdateKeyRequest(key_id=first.key.key_id, scopes=["chat"]), metadata=admin)
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION

        updated = await auth.stub.UpdateKey(
            auth_pb2.UpdateKeyRequest(
                key_id=second.key.key_id, allowed_models=["mock:*"], limits=auth_pb2.Limits(quotas=[RPM_60])
            ),
            metadata=admin,
        )
        assert list(updated.key.allowed_models) == ["mock:*"]
        assert list(updated.key.scopes) == ["chat", "embeddings"]  # empty scopes in the update: kept
        cleared = await auth.stub.UpdateKey(
            auth_pb2.UpdateKeyRequest(key_id=second.key.key_id, limits=auth_pb2.Limits()), metadata=admin
        )
        assert not cleared.key.limits.quotas
        assert list(cleared.key.allowed_models) == ["mock:*"]


async def test_no_key_secret_in_any_table_log_line_or_error(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "gw-wrong-key-that-someone-typed-0123456789"
    secrets = [ADMIN, ACME, wrong]
    errors: list[str] = []
    async with running_auth(auth_config(database_url, tmp_path), SECRETS) as auth:
        for name in ("a", "b"):
            created = await auth.stub.CreateKey(
                auth_pb2.CreateKeyRequest(tenant_id="acme", name=name), metadata=bearer(ADMIN)
            )
            secrets.append(created.secret)
        await auth.stub.RevokeKey(auth_pb2.RevokeKeyRequest(key_id=created.key.key_id), metadata=bearer(ADMIN))
        for key in (wrong, secrets[-1], wrong[:-1]):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _authenticate(auth, key)
            errors.append(f"{caught.value.details()} {caught.value.trailing_metadata()}")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await auth.stub.ListKeys(auth_pb2.ListKeysRequest(), metadata=bearer(key))
            errors.append(f"{caught.value.details()} {caught.value.trailing_metadata()}")
        listed = await auth.stub.ListKeys(auth_pb2.ListKeysRequest(include_revoked=True), metadata=bearer(ADMIN))
        errors.append(str(listed))

    engine = create_async_engine(async_database_url(database_url))
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        dump = []
        for table in tables:
            rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
            dump.append(f"{table}: {rows}")
    await engine.dispose()
    everything = "\n".join([*dump, caplog.text, *errors])
    assert {"auth_tenants", "auth_api_keys", "alembic_version_auth"} <= set(tables)
    # The dump is real: every stored key shows up by its hash, and the log saw the refusals.
    assert all(hash_key(s) in everything for s in secrets[:2] + secrets[3:])
    assert "authentication refused" in caplog.text
    for secret in secrets:
        assert secret not in everything


_START_AND_STOP = """
import asyncio
from gateway_common.config import load_config
from services.auth.server import build

async def main() -> None:
    app = build(load_config(), listen="127.0.0.1:0")
    await app.start()
    await app.stop(0)

asyncio.run(main())
"""


@pytest.mark.postgres
async def test_replicas_starting_together_migrate_and_bootstrap_once(postgres_url: str, tmp_path: Path) -> None:
    admin_conn = await asyncpg.connect(postgres_url)
    await admin_conn.execute('CREATE DATABASE "auth_replicas"')
    await admin_conn.close()
    url = postgres_url.rsplit("/", 1)[0] + "/auth_replicas"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GATEWAY_TENANT_KEYS": f"acme:{ACME}",
        "GATEWAY_ADMIN_KEY": ADMIN,
        "GATEWAY_DEMO_KEY_FILE": str(tmp_path / "demo-key"),
        "GATEWAY_CONFIG": "",
        # Replicas share one key ring (a generated file in the working directory is for one process).
        "GATEWAY_CREDENTIALS_KEK": base64.b64encode(bytes(range(32))).decode(),
    }
    replicas = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _START_AND_STOP,
            env=env,
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [(await replica.communicate())[0].decode() for replica in replicas]
    assert [replica.returncode for replica in replicas] == [0, 0, 0], "\n".join(outputs)
    engine = create_async_engine(async_database_url(url))
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version_auth"))).all()
        keys = (await conn.execute(text("SELECT tenant_id FROM auth_api_keys ORDER BY tenant_id"))).all()
    await engine.dispose()
    assert [v[0] for v in versions] == ["0003"]
    assert [k[0] for k in keys] == ["acme", "admin"]
