"""The real ``python -m services.auth`` process refuses to start with a missing or wrong KEK once
credentials exist, and saying so; and only the providers service may resolve credentials (mutual TLS)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

import grpc
import pytest

from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc
from gateway_common.config import load_config
from gateway_common.errors import Reason
from gateway_common.grpc_server import server_security
from gateway_common.tls import write_local_ca
from services.auth.credentials.keyring import KEK_ENV, KEK_FILE_ENV
from services.auth.server import build
from services.auth.settings import AuthSecrets
from tests.auth.helpers import auth_config, bearer, gateway_error, running_auth
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "gw-start-admin-key-0123456789abcdefghij"
KEK = base64.b64encode(bytes(range(32))).decode()
OTHER = base64.b64encode(bytes(range(50, 82))).decode()


async def _seed(database_url: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One credential sealed under KEK ``k1``."""
    monkeypatch.setenv(KEK_ENV, f"k1:{KEK}")
    async with running_auth(auth_config(database_url, folder), AuthSecrets(admin_key=ADMIN)) as auth:
        await credentials_pb2_grpc.CredentialServiceStub(auth.channel).CreateCredential(
            credentials_pb2.CreateCredentialRequest(
                tenant_id="admin", provider="openai", secret=credentials_pb2.CredentialSecret(api_key="k" * 40)
            ),
            metadata=bearer(ADMIN),
        )


def _env(database_url: str, folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_INTERNAL_TLS="off",
        GATEWAY_AUTH_DATABASE_URL=database_url,
        GATEWAY_AUTH_LISTEN=f"127.0.0.1:{free_port()}",
        GATEWAY_DEMO_KEY_FILE=str(folder / "demo-key"),
        GATEWAY_ADMIN_KEY=ADMIN,
        GATEWAY_CONFIG="",
    )
    env.update(extra)
    return env


async def _run_auth(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.auth",
        cwd=cwd,
        env={**env, "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "gen")))},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong key, same id", "KEK 'k1' does not open its data key"),
        ("another key", "sealed under KEK 'k1', which is not configured"),
        ("no key at all", "sealed under KEK 'k1', which is not configured"),
        ("unreadable file", "cannot read the credentials KEK file GATEWAY_CREDENTIALS_KEK_FILE="),
    ],
)
async def test_a_wrong_or_missing_kek_stops_the_process_with_a_clear_message(
    case: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    await _seed(database_url, tmp_path, monkeypatch)
    extra = {
        "wrong key, same id": {KEK_ENV: f"k1:{OTHER}"},
        "another key": {KEK_ENV: OTHER},
        # No variable: the embedded default generates a fresh KEK file in the working directory,
        # which cannot open what the lost one sealed.
        "no key at all": {},
        "unreadable file": {KEK_FILE_ENV: str(tmp_path / "absent.kek")},
    }[case]
    code, stderr = await _run_auth(_env(database_url, tmp_path, **extra), cwd=tmp_path)
    assert code == 2, stderr
    assert expected in stderr, stderr
    if case != "unreadable file":
        assert "Refusing to serve credentials that cannot be read" in stderr
        assert "GATEWAY_CREDENTIALS_KEK" in stderr
    for key in (KEK, OTHER):
        assert key not in stderr
    if case == "no key at all":
        assert (tmp_path / ".gateway" / "credentials.kek").exists()


async def test_only_the_providers_service_resolves_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls_dir = tmp_path / "tls"
    write_local_ca(tls_dir, ("auth", "providers", "edge", "router", "cli"))
    monkeypatch.setenv(KEK_ENV, KEK)
    config = auth_config(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path)
    security = server_security(load_config(env={"GATEWAY_TLS_DIR": str(tls_dir)}).tls, "auth")
    assert security is not None
    app = build(config, listen="127.0.0.1:0", secrets=AuthSecrets(admin_key=ADMIN))
    port = await app.start(security)

    def channel(identity: str) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(tls_dir / "ca.crt").read_bytes(),
            private_key=(tls_dir / f"{identity}.key").read_bytes(),
            certificate_chain=(tls_dir / f"{identity}.crt").read_bytes(),
        )
        return grpc.aio.secure_channel(f"localhost:{port}", credentials)

    request = credentials_pb2.ResolveCredentialsRequest(tenant_id="admin", provider="openai")
    try:
        async with channel("edge") as edge:
            api = credentials_pb2_grpc.CredentialServiceStub(edge)
            await api.CreateCredential(
                credentials_pb2.CreateCredentialRequest(
                    provider="openai", secret=credentials_pb2.CredentialSecret(api_key="e" * 40)
                ),
                metadata=bearer(ADMIN),
            )
            for call in (
                api.ResolveCredentials(request),
                api.StoreRefreshedTokens(credentials_pb2.StoreRefreshedTokensRequest(credential_id="cred_0")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert gateway_error(refused.value).reason == Reason.CALLER_NOT_ALLOWED
        for identity in ("router", "cli"):
            async with channel(identity) as other:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await credentials_pb2_grpc.CredentialServiceStub(other).ResolveCredentials(request)
                assert gateway_error(refused.value).reason == Reason.CALLER_NOT_ALLOWED
        async with channel("providers") as providers:
            answer = await credentials_pb2_grpc.CredentialServiceStub(providers).ResolveCredentials(request)
            assert [c.secret.api_key for c in answer.credentials] == ["e" * 40]
    finally:
        await app.stop(0)
