"""Which candidates a principal may use, and the tenant's request policy.

Scopes, the key's model allowlist and the tenant's deny lists filter the planned candidates;
a request left with none is refused before anything is reserved.
"""

from __future__ import annotations

import grpc

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.errors import GatewayError, Reason, invalid_argument
from services.router.planner import Candidate, Plan, matches_any


def require_scope(principal: auth_pb2.Principal, scope: str) -> None:
    """PERMISSION_DENIED unless the key holds ``scope`` (or ``admin``)."""
    if scope not in principal.scopes and "admin" not in principal.scopes:
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.PERMISSION_DENIED,
            f"This API key lacks the '{scope}' scope needed for this operation.",
            {"scope": scope},
        )


def allowed_candidates(principal: auth_pb2.Principal, plan: Plan) -> tuple[Candidate, ...]:
    """The plan's candidates this principal may use; PERMISSION_DENIED when none is left."""
    allow = tuple(principal.allowed_models)
    deny_models = tuple(principal.policy.deny_models)
    deny_providers = set(principal.policy.deny_providers)
    alias_allowed = not allow or matches_any(allow, plan.model)
    kept = tuple(
        c
        for c in plan.candidates
        if (alias_allowed or matches_any(allow, c.id))
        and not matches_any(deny_models, plan.model, c.id)
        and c.routed_provider not in deny_providers
    )
    if not kept:
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.MODEL_NOT_ALLOWED,
            f"This API key is not allowed to use the model `{plan.model}`.",
            {"param": "model", "model": plan.model},
        )
    return kept


def has_budget(limits: list[ratelimit_pb2.DescriptorLimits], max_cost_usd: float | None) -> bool:
    """Whether a request is under a budget: a spend quota on any descriptor, or its own cost cap."""
    if max_cost_usd is not None:
        return True
    return any(q.unit == quota_pb2.UNIT_COST_MICRO_USD for item in limits for q in item.quotas)


def priced_candidates(
    principal: auth_pb2.Principal, model: str, candidates: tuple[Candidate, ...], budgeted: bool
) -> tuple[Candidate, ...]:
    """The candidates a budgeted request of a tenant that refuses unpriced models may use.

    An unpriced deployment would cost $0 against the budget whatever it really costs, so such a
    tenant's budgeted requests skip it; PERMISSION_DENIED, naming the model, when none is left.
    """
    if not budgeted or not principal.policy.refuse_unpriced:
        return candidates
    kept = tuple(c for c in candidates if c.price.priced)
    if not kept:
        unpriced = ", ".join(c.id for c in candidates)
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.POLICY_VIOLATION,
            f"The model `{model}` has no known price ({unpriced}), and this tenant refuses unpriced "
            "models when a budget applies: a budget cannot count what it costs. Price it in the "
            "gateway's configuration or choose a priced model.",
            {"param": "model", "model": model, "unpriced": unpriced},
        )
    return kept


def check_prompt_size(principal: auth_pb2.Principal, prompt_tokens: int) -> None:
    """INVALID_ARGUMENT when the prompt exceeds the tenant's ``max_prompt_tokens``."""
    policy = principal.policy
    if policy.HasField("max_prompt_tokens") and prompt_tokens > policy.max_prompt_tokens:
        error = invalid_argument(
            f"The prompt has about {prompt_tokens} tokens; this tenant allows at most "
            f"{policy.max_prompt_tokens} per request.",
            "messages",
        )
        error.reason = Reason.POLICY_VIOLATION
        raise error


def check_prompt_cap(max_prompt_tokens: int | None, prompt_tokens: int, param: str) -> None:
    """INVALID_ARGUMENT naming ``param`` when the prompt exceeds the gateway's ``max_prompt_tokens``."""
    if max_prompt_tokens is not None and prompt_tokens > max_prompt_tokens:
        error = invalid_argument(
            f"The prompt has about {prompt_tokens} tokens; this gateway allows at most "
            f"{max_prompt_tokens} per request.",
            param,
        )
        error.reason = Reason.POLICY_VIOLATION
        raise error


def usage_tenant(principal: auth_pb2.Principal, requested: str) -> str:
    """The tenant whose usage ``principal`` may read: its own, or any for an admin key."""
    require_scope(principal, "usage:read")
    tenant = requested or principal.tenant_id
    if tenant != principal.tenant_id and "admin" not in principal.scopes:
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.PERMISSION_DENIED,
            "This API key may read only its own tenant's usage.",
            {"param": "tenant_id"},
        )
    return tenant
