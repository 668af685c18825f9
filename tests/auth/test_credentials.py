"""The credential store through its gRPC API, on SQLite and PostgreSQL: secrets sealed at rest,
shown only as their last four, resolved in clear, isolated per tenant, and their KEKs rotated."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc
from gateway.quota.v1 import quota_pb2
from gateway_common.config import ConfigError, GatewayConfig
from gateway_common.db import async_database_url
from services.auth.credentials.keyring import KEK_ENV, KEK_FILE_ENV
from services.auth.settings import AuthSecrets, BootstrapKey
from tests.auth.helpers import RunningAuth, auth_config, bearer, gateway_error, running_auth

ADMIN = "gw-cred-admin-key-0123456789abcdefghij"
ACME = "gw-cred-acme-key-0123456789abcdefghijk"
BETA = "gw-cred-beta-key-0123456789abcdefghijk"
SECRETS = AuthSecrets((BootstrapKey("acme", ACME), BootstrapKey("beta", BETA)), ADMIN)
OLD_KEK = base64.b64encode(bytes(range(32))).decode()
NEW_KEK = base64.b64encode(bytes(range(100, 132))).decode()


def upstream_secret(label: str) -> str:
    """A secret no redaction pattern knows: only the code's own discipline keeps it out of logs."""
    return f"{label}-{secrets.token_hex(20)}"


@pytest.fixture
def config(database_url: str, tmp_path: Path) -> GatewayConfig:
    """The auth service on ``database_url``, its resolve cache off (answers reflect every change)."""
    base = auth_config(database_url, tmp_path)
    return base.model_copy(
        update={
            "auth": base.auth.model_copy(
                update={"credentials": base.auth.credentials.model_copy(update={"cache_ttl_s": 0.0})}
            )
        }
    )


@asynccontextmanager
async def started(config: GatewayConfig, monkeypatch: pytest.MonkeyPatch, kek: str) -> AsyncIterator[RunningAuth]:
    """The service with ``kek`` as GATEWAY_CREDENTIALS_KEK."""
    monkeypatch.setenv(KEK_ENV, kek)
    monkeypatch.delenv(KEK_FILE_ENV, raising=False)
    async with running_auth(config, SECRETS) as running:
        yield running


def stub(auth: RunningAuth) -> credentials_pb2_grpc.CredentialServiceAsyncStub:
    """The CredentialService on the running auth."""
    return credentials_pb2_grpc.CredentialServiceStub(auth.channel)


async def create_api_key(
    auth: RunningAuth, key: str, secret: str, *, tenant: str = "", provider: str = "openai", priority: int = 0
) -> credentials_pb2.Credential:
    """A new API-key credential, created with ``key``."""
    response = await stub(auth).CreateCredential(
        credentials_pb2.CreateCredentialRequest(
            tenant_id=tenant,
            provider=provider,
            name=f"p{priority}",
            priority=priority,
            limits=[quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_MINUTE, limit=60)],
            secret=credentials_pb2.CredentialSecret(api_key=secret),
        ),
        metadata=bearer(key),
    )
    return response.credential


async def resolve(auth: RunningAuth, tenant: str, provider: str = "openai") -> list[credentials_pb2.UsableCredential]:
    """What the providers service gets for a tenant and provider."""
    answer = await stub(auth).ResolveCredentials(
        credentials_pb2.ResolveCredentialsRequest(tenant_id=tenant, provider=provider)
    )
    return list(answer.credentials)


async def dump_rows(database_url: str) -> bytes:
    """Every column of every credential row, as the database gives it (a ``pg_dump`` of the table)."""
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM auth_credentials"))).all()
    finally:
        await engine.dispose()
    dumped = b""
    for row in rows:
        for value in row:
            dumped += value if isinstance(value, bytes) else str(value).encode()
            dumped += b"|"
    return dumped


def raw_sqlite_bytes(database_url: str) -> bytes:
    """The SQLite database file and its journals, byte for byte."""
    path = Path(database_url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


async def test_round_trip_only_last_four_and_nothing_in_clear_at_rest(
    config: GatewayConfig, database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first, second, rotated = (upstream_secret(label) for label in ("first", "second", "rotated"))
    access, refresh, refreshed = (upstream_secret(label) for label in ("access", "refresh", "refreshed"))
    async with started(config, monkeypatch, OLD_KEK) as auth:
        low = await create_api_key(auth, ACME, first, priority=5)
        high = await create_api_key(auth, ADMIN, second, tenant="acme", priority=1)
        tokens = credentials_pb2.OAuthTokens(access_token=access, refresh_token=refresh, token_type="Bearer")
        tokens.expires_at.FromSeconds(1_900_000_000)
        oauth = (
            await stub(auth).CreateCredential(
                credentials_pb2.CreateCredentialRequest(
                    provider="gemini-cli", secret=credentials_pb2.CredentialSecret(oauth=tokens)
                ),
                metadata=bearer(ACME),
            )
        ).credential
        assert (low.tenant_id, low.secret_last_four, low.kind) == (
            "acme",
            first[-4:],
            credentials_pb2.CREDENTIAL_KIND_API_KEY,
        )
        assert oauth.kind == credentials_pb2.CREDENTIAL_KIND_OAUTH and oauth.secret_last_four == access[-4:]
        assert oauth.expires_at.seconds == 1_900_000_000 and oauth.name == "gemini-cli"

        resolved = await resolve(auth, "acme")
        assert [(r.credential.credential_id, r.secret.api_key) for r in resolved] == [
            (high.credential_id, second),
            (low.credential_id, first),
        ]
        assert list(resolved[0].credential.limits) == list(high.limits)

        await stub(auth).RotateCredential(
            credentials_pb2.RotateCredentialRequest(
                credential_id=low.credential_id, secret=credentials_pb2.CredentialSecret(api_key=rotated)
            ),
            metadata=bearer(ACME),
        )
        new_tokens = credentials_pb2.OAuthTokens(access_token=refreshed)
        after = await stub(auth).StoreRefreshedTokens(
            credentials_pb2.StoreRefreshedTokensRequest(credential_id=oauth.credential_id, tokens=new_tokens)
        )
        assert after.credential.secret_last_four == refreshed[-4:]
        gemini = await resolve(auth, "acme", "gemini-cli")
        # An empty refresh token in a refresh keeps the stored one.
        assert (gemini[0].secret.oauth.access_token, gemini[0].secret.oauth.refresh_token) == (refreshed, refresh)
        assert [r.secret.api_key for r in await resolve(auth, "acme")] == [second, rotated]

        admin_answers = b""
        for key in (ADMIN, ACME):
            listing = await stub(auth).ListCredentials(credentials_pb2.ListCredentialsRequest(), metadata=bearer(key))
            assert len(listing.credentials) == 3
            admin_answers += listing.SerializeToString()
        admin_answers += low.SerializeToString() + oauth.SerializeToString() + after.SerializeToString()

    at_rest = await dump_rows(database_url)
    if database_url.startswith("sqlite"):
        at_rest += raw_sqlite_bytes(database_url)
    # The dump did read the rows: what may be shown (the last four) is there.
    assert rotated[-4:].encode() in at_rest and refreshed[-4:].encode() in at_rest
    every = (first, second, rotated, access, refresh, refreshed)
    for secret in every:
        assert secret.encode() not in at_rest, "a secret is in clear in the database"
        assert secret.encode() not in admin_answers, "an admin answer carries a secret"
        assert secret not in caplog.text, "a secret reached a log line"
        assert all(secret not in str(r.args) for r in caplog.records)
    assert "credential" in caplog.text  # the store did log (ids only)


async def test_tenant_isolation(config: GatewayConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    async with started(config, monkeypatch, OLD_KEK) as auth:
        acme = await create_api_key(auth, ACME, upstream_secret("acme"))
        beta = await create_api_key(auth, BETA, upstream_secret("beta"))
        assert beta.tenant_id == "beta"
        api = stub(auth)
        # Another tenant's credential is exactly as absent as one that never existed.
        for credential_id in (acme.credential_id, "cred_0000000000000000"):
            calls: list[Any] = [
                api.UpdateCredential(
                    credentials_pb2.UpdateCredentialRequest(
                        credential_id=credential_id, state=credentials_pb2.CREDENTIAL_STATE_DISABLED
                    ),
                    metadata=bearer(BETA),
                ),
                api.RotateCredential(
                    credentials_pb2.RotateCredentialRequest(
                        credential_id=credential_id, secret=credentials_pb2.CredentialSecret(api_key="x" * 20)
                    ),
                    metadata=bearer(BETA),
                ),
                api.DeleteCredential(
                    credentials_pb2.DeleteCredentialRequest(credential_id=credential_id), metadata=bearer(BETA)
                ),
            ]
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND
                assert refused.value.details() == f"Credential {credential_id!r} not found."
        for request in (
            api.CreateCredential(
                credentials_pb2.CreateCredentialRequest(
                    tenant_id="acme", provider="openai", secret=credentials_pb2.CredentialSecret(api_key="y" * 20)
                ),
                metadata=bearer(BETA),
            ),
            api.ListCredentials(credentials_pb2.ListCredentialsRequest(tenant_id="acme"), metadata=bearer(BETA)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await request
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        own = await api.ListCredentials(credentials_pb2.ListCredentialsRequest(), metadata=bearer(BETA))
        assert [c.credential_id for c in own.credentials] == [beta.credential_id]
        everyone = await api.ListCredentials(credentials_pb2.ListCredentialsRequest(), metadata=bearer(ADMIN))
        assert {c.credential_id for c in everyone.credentials} == {acme.credential_id, beta.credential_id}
        only_acme = await api.ListCredentials(
            credentials_pb2.ListCredentialsRequest(tenant_id="acme"), metadata=bearer(ADMIN)
        )
        assert [c.credential_id for c in only_acme.credentials] == [acme.credential_id]
        # Untouched by beta's attempts.
        assert [r.credential.state for r in await resolve(auth, "acme")] == [credentials_pb2.CREDENTIAL_STATE_ACTIVE]
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await api.ListCredentials(credentials_pb2.ListCredentialsRequest())
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_settings_state_and_validation(config: GatewayConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    async with started(config, monkeypatch, OLD_KEK) as auth:
        api = stub(auth)
        credential = await create_api_key(auth, ACME, upstream_secret("k"))
        limits = [quota_pb2.Quota(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_DAY, limit=1000)]
        updated = (
            await api.UpdateCredential(
                credentials_pb2.UpdateCredentialRequest(
                    credential_id=credential.credential_id,
                    name="renamed",
                    priority=7,
                    state=credentials_pb2.CREDENTIAL_STATE_DISABLED,
                    replace_limits=True,
                    limits=limits,
                ),
                metadata=bearer(ACME),
            )
        ).credential
        assert (updated.name, updated.priority, list(updated.limits)) == ("renamed", 7, limits)
        assert await resolve(auth, "acme") == []  # disabled: never used
        await api.UpdateCredential(
            credentials_pb2.UpdateCredentialRequest(
                credential_id=credential.credential_id, state=credentials_pb2.CREDENTIAL_STATE_ACTIVE
            ),
            metadata=bearer(ACME),
        )
        enabled = await resolve(auth, "acme")
        assert [(r.credential.name, list(r.credential.limits)) for r in enabled] == [("renamed", limits)]
        bad: list[tuple[credentials_pb2.CreateCredentialRequest, str]] = [
            (credentials_pb2.CreateCredentialRequest(provider="openai"), "secret"),
            (
                credentials_pb2.CreateCredentialRequest(
                    provider="Open AI", secret=credentials_pb2.CredentialSecret(api_key="z" * 20)
                ),
                "provider",
            ),
            (
                credentials_pb2.CreateCredentialRequest(
                    provider="openai",
                    secret=credentials_pb2.CredentialSecret(api_key="z" * 20),
                    limits=[quota_pb2.Quota(unit=quota_pb2.UNIT_COST_MICRO_USD, window=quota_pb2.WINDOW_DAY, limit=5)],
                ),
                "limits[0].unit",
            ),
        ]
        for request, field in bad:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await api.CreateCredential(request, metadata=bearer(ACME))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [v.field for v in gateway_error(refused.value).field_violations] == [field]
        with pytest.raises(grpc.aio.AioRpcError) as wrong_kind:
            await api.RotateCredential(
                credentials_pb2.RotateCredentialRequest(
                    credential_id=credential.credential_id,
                    secret=credentials_pb2.CredentialSecret(oauth=credentials_pb2.OAuthTokens(access_token="a" * 20)),
                ),
                metadata=bearer(ACME),
            )
        assert wrong_kind.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as not_oauth:
            await api.StoreRefreshedTokens(
                credentials_pb2.StoreRefreshedTokensRequest(
                    credential_id=credential.credential_id,
                    tokens=credentials_pb2.OAuthTokens(access_token="a" * 20),
                )
            )
        assert not_oauth.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await api.DeleteCredential(
            credentials_pb2.DeleteCredentialRequest(credential_id=credential.credential_id), metadata=bearer(ACME)
        )
        assert await resolve(auth, "acme") == []


async def test_a_sealed_secret_copied_to_another_row_does_not_open(
    config: GatewayConfig, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme_secret = upstream_secret("acme")
    async with started(config, monkeypatch, OLD_KEK) as auth:
        acme = await create_api_key(auth, ACME, acme_secret)
        beta = await create_api_key(auth, BETA, upstream_secret("beta"))
        engine = create_async_engine(async_database_url(database_url))
        try:
            for columns in (("ciphertext", "nonce"), ("ciphertext", "nonce", "wrapped_key", "aad")):
                async with engine.begin() as conn:
                    assignments = ", ".join(
                        f"{c} = (SELECT {c} FROM auth_credentials WHERE credential_id = :src)" for c in columns
                    )
                    await conn.execute(
                        text(f"UPDATE auth_credentials SET {assignments} WHERE credential_id = :dst"),
                        {"src": acme.credential_id, "dst": beta.credential_id},
                    )
                with pytest.raises(grpc.aio.AioRpcError) as unreadable:
                    await resolve(auth, "beta")
                assert unreadable.value.code() == grpc.StatusCode.INTERNAL
                assert acme_secret not in (unreadable.value.details() or "")
        finally:
            await engine.dispose()
        assert [r.secret.api_key for r in await resolve(auth, "acme")] == [acme_secret]


async def _kek_ids(database_url: str) -> list[str]:
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as conn:
            return [row[0] for row in (await conn.execute(text("SELECT kek_id FROM auth_credentials"))).all()]
    finally:
        await engine.dispose()


def _without_background_rewrap(config: GatewayConfig) -> GatewayConfig:
    credentials = config.auth.credentials.model_copy(update={"rewrap_at_start": False})
    return config.model_copy(update={"auth": config.auth.model_copy(update={"credentials": credentials})})


async def test_kek_rotation_rewraps_every_row_and_the_old_kek_goes(
    config: GatewayConfig, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = [upstream_secret(f"s{i}") for i in range(3)]
    async with started(config, monkeypatch, f"old:{OLD_KEK}") as auth:
        for i, value in enumerate(values):
            await create_api_key(auth, ADMIN, value, tenant="acme" if i else "beta", priority=i)
    ciphertexts = await dump_rows(database_url)
    assert await _kek_ids(database_url) == ["old"] * 3
    # A new current KEK next to the old one: rows still open, new rows use the new KEK.
    async with started(_without_background_rewrap(config), monkeypatch, f"new:{NEW_KEK},old:{OLD_KEK}") as auth:
        assert [r.secret.api_key for r in await resolve(auth, "acme")] == values[1:]
        with pytest.raises(grpc.aio.AioRpcError) as not_admin:
            await stub(auth).RewrapCredentials(credentials_pb2.RewrapCredentialsRequest(), metadata=bearer(ACME))
        assert not_admin.value.code() == grpc.StatusCode.PERMISSION_DENIED
        answer = await stub(auth).RewrapCredentials(credentials_pb2.RewrapCredentialsRequest(), metadata=bearer(ADMIN))
        assert (answer.kek_id, answer.rewrapped, answer.remaining) == ("new", 3, 0)
        assert [r.secret.api_key for r in await resolve(auth, "beta")] == values[:1]
    assert await _kek_ids(database_url) == ["new"] * 3
    # Data keys re-wrapped, secrets not re-encrypted: every ciphertext is still in the table.
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as conn:
            for (ciphertext,) in (await conn.execute(text("SELECT ciphertext FROM auth_credentials"))).all():
                assert bytes(ciphertext) in ciphertexts
    finally:
        await engine.dispose()
    # The old KEK removed: everything still resolves.
    async with started(config, monkeypatch, f"new:{NEW_KEK}") as auth:
        assert [r.secret.api_key for r in await resolve(auth, "acme")] == values[1:]
    # And the old KEK alone no longer starts the service.
    with pytest.raises(ConfigError, match="sealed under KEK 'new', which is not configured"):
        async with started(config, monkeypatch, f"old:{OLD_KEK}"):
            pass


async def test_the_service_rewraps_in_the_background_after_a_kek_rotation(
    config: GatewayConfig, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started(config, monkeypatch, f"old:{OLD_KEK}") as auth:
        for i in range(2):
            await create_api_key(auth, ACME, upstream_secret(f"b{i}"), priority=i)
    async with started(config, monkeypatch, f"new:{NEW_KEK},old:{OLD_KEK}") as auth:
        async with asyncio.timeout(20):
            while await _kek_ids(database_url) != ["new", "new"]:
                await asyncio.sleep(0.05)
        assert len(await resolve(auth, "acme")) == 2


async def test_a_wrong_kek_under_the_same_id_stops_the_start(
    config: GatewayConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started(config, monkeypatch, f"k1:{OLD_KEK}") as auth:
        await create_api_key(auth, ACME, upstream_secret("w"))
    with pytest.raises(ConfigError, match=r"KEK 'k1' does not open its data key.*Refusing to serve"):
        async with started(config, monkeypatch, f"k1:{NEW_KEK}"):
            pass


async def test_resolve_answers_are_cached_briefly(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = auth_config(database_url, tmp_path)
    assert config.auth.credentials.cache_ttl_s == 5.0
    async with started(config, monkeypatch, OLD_KEK) as auth:
        answer = await stub(auth).ResolveCredentials(
            credentials_pb2.ResolveCredentialsRequest(tenant_id="acme", provider="openai")
        )
        assert answer.cache_ttl_seconds == 5 and list(answer.credentials) == []
        # A change made through this replica is seen at once (its cache entry is dropped).
        await create_api_key(auth, ACME, upstream_secret("c"))
        assert len(await resolve(auth, "acme")) == 1
