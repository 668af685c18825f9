"""Domain rules without I/O: key material, principals, input checks, the secret environment."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from gateway_common.config import ConfigError
from gateway_common.errors import GatewayError
from services.auth.keys import display_prefix, generate_key, hash_key, new_key_id
from services.auth.model import ApiKey, Limits, Policy, Quota, Tenant, Unit, Window, resolve_principal
from services.auth.settings import AuthSecrets, BootstrapKey, parse_tenant_keys
from services.auth.validation import check_limits, check_policy, check_scopes, check_tenant_id

NOW = datetime(2030, 1, 1, tzinfo=UTC)
NO_LIMITS = Limits()


def test_generated_keys_carry_the_prefix_and_32_random_bytes() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith("gw-")
        body = key.removeprefix("gw-")
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 32


def test_hash_is_sha256_hex_of_the_key() -> None:
    assert hash_key("gw-abc") == hashlib.sha256(b"gw-abc").hexdigest()
    assert len(hash_key(generate_key())) == 64


def test_display_prefix_never_shows_more_than_a_quarter_of_the_key() -> None:
    key = generate_key()
    assert display_prefix(key) == key[:8]
    assert display_prefix("short-key-1") == "sh"
    assert display_prefix("abc") == ""


def test_key_ids_are_distinct_and_not_secrets() -> None:
    ids = {new_key_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(i.startswith("key_") and len(i) == 20 for i in ids)


def _tenant(key_defaults: Limits = NO_LIMITS) -> Tenant:
    return Tenant(
        "acme",
        "Acme",
        Limits((Quota(Unit.REQUESTS, Window.MINUTE, 600),)),
        key_defaults,
        Policy(deny_models=("openai:gpt-4*",), max_prompt_tokens=1000),
        NOW,
    )


def _key(limits: Limits | None = None, **changes: object) -> ApiKey:
    key = ApiKey("key_1", "acme", "ci", "gw-abcde", ("chat",), ("mock:*",), limits, NOW)
    return replace(key, **changes)  # type: ignore[arg-type]


def test_principal_takes_the_keys_own_limits_first() -> None:
    own = Limits((Quota(Unit.TOKENS, Window.DAY, 5),), max_concurrent_requests=2)
    defaults = Limits((Quota(Unit.REQUESTS, Window.MINUTE, 60),))
    principal = resolve_principal(_key(own), _tenant(defaults))
    assert principal.key_limits == own
    assert principal.tenant_limits == _tenant().limits
    assert principal.policy.deny_models == ("openai:gpt-4*",)
    assert (principal.tenant_id, principal.key_id, principal.key_prefix, principal.key_name) == (
        "acme",
        "key_1",
        "gw-abcde",
        "ci",
    )
    assert principal.allowed_models == ("mock:*",)


@pytest.mark.parametrize("own", [None, Limits()])
def test_principal_without_own_limits_inherits_the_tenants_key_defaults(own: Limits | None) -> None:
    defaults = Limits((Quota(Unit.REQUESTS, Window.MINUTE, 60),))
    assert resolve_principal(_key(own), _tenant(defaults)).key_limits == defaults


def test_key_refusal_by_revocation_and_expiry() -> None:
    assert _key().refusal(NOW) is None
    assert _key(expire_time=NOW + timedelta(seconds=1)).refusal(NOW) is None
    assert _key(expire_time=NOW).refusal(NOW) == "expired"
    assert _key(revoke_time=NOW - timedelta(days=1)).refusal(NOW) == "revoked"


def _field(error: GatewayError) -> str:
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    return error.field_violations[0].field


@pytest.mark.parametrize("tenant_id", ["acme", "a", "team_1-x", "0" + "a" * 62])
def test_good_tenant_ids(tenant_id: str) -> None:
    assert check_tenant_id(tenant_id, "tenant.tenant_id") == tenant_id


@pytest.mark.parametrize("tenant_id", ["", "Acme", "-acme", "_a", "a b", "a:b", "a" * 64, "é"])
def test_bad_tenant_ids_name_the_field(tenant_id: str) -> None:
    with pytest.raises(GatewayError) as caught:
        check_tenant_id(tenant_id, "tenant.tenant_id")
    assert _field(caught.value) == "tenant.tenant_id"


def test_scopes_known_only_and_deduplicated() -> None:
    assert check_scopes(["chat", "admin", "chat", "usage:read"], "scopes") == ("chat", "admin", "usage:read")
    with pytest.raises(GatewayError) as caught:
        check_scopes(["chat", "root"], "scopes")
    assert _field(caught.value) == "scopes[1]"


def test_limits_need_non_negative_limits_and_one_quota_per_unit_and_window() -> None:
    ok = Limits((Quota(Unit.REQUESTS, Window.MINUTE, 0), Quota(Unit.REQUESTS, Window.DAY, 10)), 0)
    assert check_limits(ok, "limits") == ok
    with pytest.raises(GatewayError) as caught:
        check_limits(Limits((Quota(Unit.TOKENS, Window.DAY, 1), Quota(Unit.TOKENS, Window.MINUTE, -1))), "limits")
    assert _field(caught.value) == "limits.quotas[1].limit"
    with pytest.raises(GatewayError) as caught:
        check_limits(Limits((Quota(Unit.TOKENS, Window.DAY, 1), Quota(Unit.TOKENS, Window.DAY, 2))), "x.limits")
    assert _field(caught.value) == "x.limits.quotas[1]"
    with pytest.raises(GatewayError) as caught:
        check_limits(Limits((), -1), "limits")
    assert _field(caught.value) == "limits.max_concurrent_requests"


def test_policy_checks() -> None:
    assert check_policy(Policy(deny_models=("a:*", "a:*")), "policy").deny_models == ("a:*",)
    with pytest.raises(GatewayError) as caught:
        check_policy(Policy(max_prompt_tokens=0), "tenant.policy")
    assert _field(caught.value) == "tenant.policy.max_prompt_tokens"
    with pytest.raises(GatewayError) as caught:
        check_policy(Policy(deny_providers=("ok", "")), "policy")
    assert _field(caught.value) == "policy.deny_providers[1]"


def test_tenant_keys_parse() -> None:
    parsed = parse_tenant_keys(" acme:sk-one , beta:sk:two,")
    assert parsed == (BootstrapKey("acme", "sk-one"), BootstrapKey("beta", "sk:two"))
    assert "sk-one" not in repr(parsed)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("acme:sk-one,sk-secret-two", "entry 2 has no ':'"),
        (":sk-secret-two", "entry 1 has no tenant"),
        ("acme:", "entry 1 has no key"),
        ("ACME:sk-secret-two", "entry 1: the tenant id"),
        ("a:sk-secret-two,b:sk-secret-two", "entry 2 repeats the key of entry 1"),
        (",,", "holds no entry"),
    ],
)
def test_malformed_tenant_keys_stop_with_a_message_that_hides_the_key(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tenant_keys(text)
    message = str(caught.value)
    assert says in message and "GATEWAY_TENANT_KEYS" in message
    assert "sk-secret-two" not in message


def test_secrets_from_env() -> None:
    secrets = AuthSecrets.from_env({"GATEWAY_TENANT_KEYS": "acme:k1", "GATEWAY_ADMIN_KEY": "adm"})
    assert secrets.tenant_keys == (BootstrapKey("acme", "k1"),)
    assert secrets.admin_key == "adm"
    assert "adm" not in repr(secrets)
    assert AuthSecrets.from_env({"GATEWAY_TENANT_KEYS": "  "}) == AuthSecrets(None, None)
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_KEY is also entry 1"):
        AuthSecrets.from_env({"GATEWAY_TENANT_KEYS": "acme:same", "GATEWAY_ADMIN_KEY": "same"})


@pytest.mark.parametrize(
    ("expires_in", "ttl"),
    [(None, 2), (timedelta(seconds=60), 2), (timedelta(seconds=1.5), 1), (timedelta(seconds=0.4), 0)],
)
def test_a_principal_is_never_cached_past_its_keys_expiry(expires_in: timedelta | None, ttl: int) -> None:
    from services.auth.accounts import Accounts

    key = _key(None, expire_time=None if expires_in is None else NOW + expires_in)
    accounts = Accounts(store=None, clock=lambda: NOW)  # type: ignore[arg-type]
    assert accounts.cache_ttl_seconds(resolve_principal(key, _tenant()), 2) == ttl
