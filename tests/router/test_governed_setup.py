"""Governed LLM Gateway's setup, piece by piece: anonymous callers, shorthand aliases and
``default-chat``, the gateway-wide ``max_prompt_tokens``, and the rate-limit refusal body."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from edge.errors import error_body, http_status
from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.config import AnonymousConfig, ConfigError, GatewayConfig, load_config
from gateway_common.errors import GatewayError, Reason
from gateway_common.openai_wire.requests import parse_chat_request
from services.router import policy
from services.router.anonymous import AnonymousAccess
from services.router.planner import Planner
from services.router.quotas import descriptor_limits, refusal

_BODY = {"model": "default-chat", "messages": [{"role": "user", "content": "hi"}]}


# -- anonymous callers ------------------------------------------------------------------------


def test_anonymous_mode_is_off_by_default() -> None:
    access = AnonymousAccess(GatewayConfig().anonymous)
    assert not access.enabled
    assert access.principal("dev-local-1", "10.0.0.1") is None


def test_a_client_id_is_its_own_caller_with_the_configured_limits() -> None:
    access = AnonymousAccess(AnonymousConfig(enabled=True, requests_per_minute=20, tokens_per_minute=5000))
    principal = access.principal("dev-local-1", "10.0.0.1")
    assert principal is not None
    assert (principal.tenant_id, principal.key_id) == ("anonymous", "client:dev-local-1")
    quotas = {(q.unit, q.window): q.limit for q in principal.key_limits.quotas}
    assert quotas == {
        (quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MINUTE): 20,
        (quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_MINUTE): 5000,
    }
    # Each client id is a descriptor of its own: one client's traffic never spends another's.
    other = access.principal("dev-local-2", "10.0.0.1")
    assert other is not None
    mine = descriptor_limits(principal, auth_pb2.Limits())
    theirs = descriptor_limits(other, auth_pb2.Limits())
    assert [d.descriptor for d in mine] != [d.descriptor for d in theirs]
    assert [e.value for e in mine[0].descriptor.entries] == ["anonymous", "client:dev-local-1"]


def test_all_anonymous_callers_together_stay_under_the_total_limits() -> None:
    access = AnonymousAccess(AnonymousConfig(enabled=True, requests_per_minute=20, total_requests_per_minute=100))
    principals = [access.principal(f"invented-{i}", "") for i in range(2)]
    descriptors = [descriptor_limits(p, auth_pb2.Limits()) for p in principals if p is not None]
    # The first descriptor of each is the shared tenant one, with the total; the second the caller's.
    assert [[e.value for e in d[0].descriptor.entries] for d in descriptors] == [["anonymous"], ["anonymous"]]
    assert [d[0].quotas[0].limit for d in descriptors] == [100, 100]
    assert [d[1].quotas[0].limit for d in descriptors] == [20, 20]
    unlimited = AnonymousAccess(AnonymousConfig(enabled=True)).principal("c", "")
    assert unlimited is not None and not unlimited.tenant_limits.quotas


def test_without_a_client_id_or_with_limit_by_ip_the_address_is_the_caller() -> None:
    by_client = AnonymousAccess(AnonymousConfig(enabled=True))
    anonymous = by_client.principal("", "10.0.0.7")
    assert anonymous is not None and anonymous.key_id == "ip:10.0.0.7"
    by_ip = AnonymousAccess(AnonymousConfig(enabled=True, limit_by="ip", tenant="guests"))
    principal = by_ip.principal("dev-local-1", "10.0.0.7")
    assert principal is not None and (principal.tenant_id, principal.key_id) == ("guests", "ip:10.0.0.7")
    # Nothing to tell the caller apart by: not served.
    assert by_client.principal("", "") is None


def test_an_anonymous_caller_never_holds_admin_or_usage_scopes() -> None:
    principal = AnonymousAccess(AnonymousConfig(enabled=True, models=["openai:*"])).principal("c", "")
    assert principal is not None
    assert "admin" not in principal.scopes and "usage:read" not in principal.scopes
    policy.require_scope(principal, "chat")
    with pytest.raises(GatewayError) as raised:
        policy.usage_tenant(principal, "")
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert list(principal.allowed_models) == ["openai:*"]


def test_the_anonymous_switch_and_limits_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = load_config(env={"GATEWAY_ANONYMOUS": "true"})
    assert config.anonymous.enabled and config.anonymous.tenant == "anonymous"
    from_file = _load(tmp_path, "anonymous: {enabled: true, limit_by: ip, requests_per_minute: 5}\n")
    assert (from_file.anonymous.limit_by, from_file.anonymous.requests_per_minute) == ("ip", 5)
    with pytest.raises(ConfigError, match=r"anonymous\.limit_by"):
        _load(tmp_path, "anonymous: {limit_by: cookie}\n")


def test_a_top_level_client_id_is_the_canonical_gateway_client_id() -> None:
    request, _ = parse_chat_request({**_BODY, "client_id": "dev-local-1"})
    assert request.gateway.client_id == "dev-local-1"
    assert "client_id" not in request.extra
    nested, _ = parse_chat_request({**_BODY, "gateway": {"client_id": "abc"}})
    assert nested.gateway.client_id == "abc"
    for bad in (7, "", "x" * 129, "a\nb"):
        with pytest.raises(GatewayError) as raised:
            parse_chat_request({**_BODY, "client_id": bad})
        assert raised.value.metadata["param"] == "client_id"


# -- aliases ----------------------------------------------------------------------------------


def test_default_chat_exists_out_of_the_box_and_points_at_the_default_model() -> None:
    plan = Planner(GatewayConfig(default_model="mock:gateway-demo")).plan("default-chat")
    assert plan.model == "default-chat"
    assert [c.id for c in plan.candidates] == ["mock:gateway-demo"]
    assert "default-chat" in {ident for ident, _, _ in Planner(GatewayConfig()).catalog()}
    # Other aliases may name it without defining it.
    shorthand = Planner(GatewayConfig.model_validate({"aliases": {"cheap": "default-chat"}}))
    assert [c.id for c in shorthand.plan("cheap").candidates] == ["mock:gateway-demo"]


def test_the_aliases_shorthand_maps_a_name_to_a_provider_model() -> None:
    config = GatewayConfig.model_validate(
        {
            "aliases": {"default-chat": "openai:gpt-4o-mini", "cheap": "default-chat", "smart": "fast"},
            "models": {"fast": {"deployments": [{"provider": "mock", "model": "fast-demo"}]}},
        }
    )
    planner = Planner(config)
    assert [c.id for c in planner.plan("default-chat").candidates] == ["openai:gpt-4o-mini"]
    assert [c.id for c in planner.plan("cheap").candidates] == ["openai:gpt-4o-mini"]
    assert [c.id for c in planner.plan("smart").candidates] == ["mock:fast-demo"]
    assert planner.plan("cheap").model == "cheap"


def test_a_models_entry_named_default_chat_wins_over_the_built_in_alias() -> None:
    config = GatewayConfig.model_validate(
        {"models": {"default-chat": {"deployments": [{"provider": "mock", "model": "one"}]}}}
    )
    assert [c.id for c in Planner(config).plan("default-chat").candidates] == ["mock:one"]


def test_a_bad_alias_stops_the_config_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"aliases\.bad: unknown provider 'nowhere'"):
        _load(tmp_path, "aliases: {bad: 'nowhere:x'}\n")
    with pytest.raises(ConfigError, match=r"aliases\.bad"):
        _load(tmp_path, "aliases: {bad: not-a-model}\n")
    looping = Planner(GatewayConfig.model_validate({"aliases": {"a": "b", "b": "a"}}))
    with pytest.raises(GatewayError) as raised:
        looping.plan("a")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


def _load(folder: Path, text: str) -> GatewayConfig:
    path = folder / "gateway.yaml"
    path.write_text(text)
    return load_config(path, env={})


# -- max_prompt_tokens ------------------------------------------------------------------------


def test_max_prompt_tokens_refuses_a_bigger_prompt_naming_messages() -> None:
    policy.check_prompt_cap(None, 10**9, "messages")
    policy.check_prompt_cap(100, 100, "messages")
    with pytest.raises(GatewayError) as raised:
        policy.check_prompt_cap(100, 101, "messages")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.reason == Reason.POLICY_VIOLATION
    assert raised.value.metadata["param"] == "messages"
    assert load_config(env={"GATEWAY_MAX_PROMPT_TOKENS": "2000"}).max_prompt_tokens == 2000


# -- the refusal ------------------------------------------------------------------------------


def test_a_rate_limit_refusal_is_typed_rate_limit_exceeded() -> None:
    status = ratelimit_pb2.QuotaStatus(
        quota=quota_pb2.Quota(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_MINUTE, limit=20), exceeded=True
    )
    response = ratelimit_pb2.AcquireResponse(allowed=False, statuses=[status])
    response.retry_after.seconds = 3
    error = refusal(response)
    body = error_body(error)
    assert http_status(error) == 429
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["param"] is None
    assert body["error"]["message"]


def test_the_readme_governed_config_loads_as_documented(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Coming from Governed LLM Gateway", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = _load(tmp_path, block)
    assert config.anonymous.enabled and config.anonymous.requests_per_minute == 20
    assert [c.id for c in Planner(config).plan("default-chat").candidates] == ["openai:gpt-4o-mini"]
    assert config.max_prompt_tokens == 2000 and config.telemetry.log_file == "logs/telemetry.jsonl"
