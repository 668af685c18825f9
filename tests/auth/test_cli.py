"""The ``gateway`` CLI against an in-process auth service (SQLite): what an operator types and sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway_cli.main import main
from services.auth.settings import AuthSecrets
from tests.auth.helpers import RunningAuth, auth_config, running_auth

ADMIN = "gw-cli-admin-key-0123456789abcdefghij"


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[RunningAuth]:
    """A fresh auth service with one admin key."""
    async with running_auth(
        auth_config(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path), AuthSecrets(admin_key=ADMIN)
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def plaintext_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run auth in-process without TLS: the CLI must not pick up the certificates a
    `make up` left in the working directory (.gateway/tls)."""
    monkeypatch.setenv("GATEWAY_INTERNAL_TLS", "off")


async def gateway(
    auth: RunningAuth, capsys: pytest.CaptureFixture[str], *argv: str, admin_key: str = ADMIN
) -> tuple[int, str, str]:
    """Run the CLI in a thread (it runs its own event loop) against ``auth``; (status, stdout, stderr)."""
    capsys.readouterr()
    status = await asyncio.to_thread(
        main, [*argv[:2], "--address", f"127.0.0.1:{auth.port}", "--admin-key", admin_key, *argv[2:]]
    )
    out, err = capsys.readouterr()
    return status, out, err


async def test_tenants_and_keys_end_to_end(auth: RunningAuth, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = await gateway(
        auth,
        capsys,
        "tenants",
        "create",
        "acme",
        "--name",
        "Acme Inc",
        "--rpm",
        "600",
        "--key-rpm",
        "60",
        "--deny-models",
        "openai:gpt-4*",
        "--max-prompt-tokens",
        "4000",
        "--log-prompts",
    )
    assert status == 0, out
    assert "acme" in out and "600 req/min" in out and "60 req/min" in out

    status, out, _ = await gateway(
        auth,
        capsys,
        "keys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "ci",
        "--scopes",
        "chat,embeddings",
        "--models",
        "openai:*,mock:*",
        "--rpm",
        "60",
        "--tpm",
        "100000",
        "--budget-usd",
        "50/month",
        "--budget-usd",
        "5/day",
        "--concurrency",
        "4",
        "--expires-in",
        "30d",
    )
    assert status == 0, out
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("gw-")
    answer = await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=secret))
    principal = answer.principal
    assert principal.tenant_id == "acme" and principal.key_id in out
    assert list(principal.allowed_models) == ["openai:*", "mock:*"]
    assert principal.key_limits.max_concurrent_requests == 4
    budgets = {(q.window, q.limit) for q in principal.key_limits.quotas if q.unit == quota_pb2.UNIT_COST_MICRO_USD}
    assert budgets == {(quota_pb2.WINDOW_MONTH, 50_000_000), (quota_pb2.WINDOW_DAY, 5_000_000)}
    assert list(principal.policy.deny_models) == ["openai:gpt-4*"] and principal.policy.log_prompts

    status, out, _ = await gateway(auth, capsys, "keys", "update", principal.key_id, "--rpm", "120")
    assert status == 0, out
    assert "120 req/min" in out and "100000 tok/min" in out  # merged: the other limits stay

    status, out, _ = await gateway(
        auth, capsys, "tenants", "update", "acme", "--budget-usd", "500/month", "--no-log-prompts"
    )
    assert status == 0, out
    assert "$500.00/month" in out and "600 req/min" in out

    status, out, _ = await gateway(auth, capsys, "keys", "list", "--tenant", "acme")
    assert status == 0 and principal.key_id in out and secret not in out

    status, out, _ = await gateway(auth, capsys, "keys", "revoke", principal.key_id)
    assert status == 0 and "Revoked" in out
    status, out, _ = await gateway(auth, capsys, "keys", "list", "--tenant", "acme")
    assert principal.key_id not in out
    status, out, _ = await gateway(auth, capsys, "keys", "list", "--all")
    assert principal.key_id in out and "revoked" in out

    status, out, _ = await gateway(auth, capsys, "tenants", "list", "--json")
    assert status == 0 and '"tenant_id": "acme"' in out


async def test_a_tenant_can_turn_off_the_continuation_of_broken_streams(
    auth: RunningAuth, capsys: pytest.CaptureFixture[str]
) -> None:
    async def policy_of(tenant: str) -> auth_pb2.Policy:
        status, out, _ = await gateway(
            auth, capsys, "keys", "create", "--tenant", tenant, "--name", "k", "--scopes", "chat"
        )
        assert status == 0, out
        secret = out.strip().splitlines()[-1]
        return (await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=secret))).principal.policy

    status, out, _ = await gateway(auth, capsys, "tenants", "create", "strict", "--no-continue-streams")
    assert status == 0, out
    assert "broken streams not continued" in out
    policy = await policy_of("strict")
    assert policy.HasField("continue_broken_streams") and not policy.continue_broken_streams

    # A tenant that says nothing follows the router's own setting: the field stays unset.
    status, out, _ = await gateway(auth, capsys, "tenants", "create", "plain")
    assert status == 0, out
    assert not (await policy_of("plain")).HasField("continue_broken_streams")

    status, out, _ = await gateway(auth, capsys, "tenants", "update", "strict", "--continue-streams")
    assert status == 0, out
    assert "broken streams not continued" not in out
    policy = await policy_of("strict")
    assert policy.HasField("continue_broken_streams") and policy.continue_broken_streams


async def test_errors_are_one_line_and_exit_non_zero(auth: RunningAuth, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = await gateway(auth, capsys, "keys", "create", "--tenant", "nobody")
    assert status == 1
    assert err.strip() == "error: NOT_FOUND: Tenant 'nobody' not found."

    status, _, err = await gateway(auth, capsys, "keys", "create", "--tenant", "acme", "--scopes", "chat,root")
    assert status == 1
    assert err.count("\n") == 1 and "INVALID_ARGUMENT" in err and "(field scopes[1])" in err

    status, _, err = await gateway(auth, capsys, "tenants", "list", admin_key="gw-not-the-admin-key")
    assert status == 1
    assert err.strip() == "error: UNAUTHENTICATED: Incorrect API key provided."
    assert "gw-not-the-admin-key" not in err

    status, _, err = await gateway(auth, capsys, "keys", "create", "--tenant", "acme", "--budget-usd", "lots")
    assert status == 2 and "AMOUNT/WINDOW" in err


def test_unreachable_service_and_missing_admin_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_KEY", raising=False)
    assert main(["tenants", "list", "--address", "127.0.0.1:1"]) == 2
    assert "no admin key" in capsys.readouterr().err
    assert main(["tenants", "list", "--address", "127.0.0.1:1", "--admin-key", "k", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the auth service at 127.0.0.1:1") and err.count("\n") == 1


def test_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("default_model: mock:x\n")
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {good}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("edge:\n  port: not-a-port\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "edge.port" in err
