"""What a request reserves, on which descriptors, and how the outcome reads as headers.

Descriptors: the tenant (its own limits, shared by all its keys) and the key (its own limits, or
its tenant's key defaults, or the configured defaults). The ratelimit service counts; this module
only decides what to ask for and how to report it.

Why limits are ceilings. A reservation is the request's worst case: the prompt as a token ceiling
(``gateway_common.tokens``), ``max_tokens`` × n (or the cap the router sets upstream when none is
given), priced at the dearest candidate. Acquire admits only what fits, and settlement replaces the
reservation by the upstream's count, which is below it, with two exceptions, each bounded:
- a stream is counted as it goes; past its reservation it acquires more on the same limits and is
  stopped when they refuse, so it overshoots by at most the one chunk that did not fit;
- a unary answer longer than the max_tokens the upstream was sent (an upstream that ignores it) is
  settled at its actual usage: it overshoots by its own excess, and the next request is refused.
A request that could never fit (larger than a whole window) is refused with INVALID_ARGUMENT.
Requests served from a quota block (``quota_blocks.py``) reserve the same estimate, locally, out of
a block the service counts in full until it is settled; the bounds above hold for them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.config import LimitsConfig, ModelLimitsConfig
from gateway_common.errors import GatewayError, QuotaViolation, Reason, invalid_argument

_UNIT_NAMES = {
    quota_pb2.UNIT_REQUESTS: "requests",
    quota_pb2.UNIT_TOKENS: "tokens",
    quota_pb2.UNIT_COST_MICRO_USD: "spend",
}
_WINDOW_NAMES = {quota_pb2.WINDOW_MINUTE: "minute", quota_pb2.WINDOW_DAY: "day", quota_pb2.WINDOW_MONTH: "month"}


def model_limits(config: ModelLimitsConfig) -> auth_pb2.Limits:
    """A model's per-key limits as quotas."""
    return default_limits(
        LimitsConfig(
            requests_per_minute=config.requests_per_minute,
            requests_per_day=config.requests_per_day,
            tokens_per_minute=config.tokens_per_minute,
            tokens_per_day=config.tokens_per_day,
            max_concurrent_requests=config.max_concurrent_requests,
        )
    )


def default_limits(config: LimitsConfig) -> auth_pb2.Limits:
    """The configured default limits as quotas (zero means no limit, so it is left out)."""
    Q = quota_pb2.Quota
    candidates = [
        Q(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_MINUTE, limit=config.requests_per_minute),
        Q(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_DAY, limit=config.requests_per_day),
        Q(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_MINUTE, limit=config.tokens_per_minute),
        Q(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_DAY, limit=config.tokens_per_day),
        Q(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_MONTH, limit=config.tokens_per_month),
        Q(
            unit=quota_pb2.UNIT_COST_MICRO_USD,
            window=quota_pb2.WINDOW_DAY,
            limit=round(config.budget_usd_per_day * 1_000_000),
        ),
        Q(
            unit=quota_pb2.UNIT_COST_MICRO_USD,
            window=quota_pb2.WINDOW_MONTH,
            limit=round(config.budget_usd_per_month * 1_000_000),
        ),
    ]
    limits = auth_pb2.Limits(quotas=[q for q in candidates if q.limit > 0])
    if config.max_concurrent_requests:
        limits.max_concurrent_requests = config.max_concurrent_requests
    return limits


def _has_limits(limits: auth_pb2.Limits) -> bool:
    return bool(limits.quotas) or limits.HasField("max_concurrent_requests")


def descriptor_limits(
    principal: auth_pb2.Principal,
    defaults: auth_pb2.Limits,
    model: str = "",
    per_model: auth_pb2.Limits | None = None,
) -> list[ratelimit_pb2.DescriptorLimits]:
    """The descriptors a request of ``principal`` counts against, each with its quotas:
    the tenant, the key, and the (key, model) pair when the model has limits of its own."""
    tenant = ratelimit_pb2.DescriptorEntry(key="tenant", value=principal.tenant_id)
    key = ratelimit_pb2.DescriptorEntry(key="key", value=principal.key_id)
    result: list[ratelimit_pb2.DescriptorLimits] = []
    if _has_limits(principal.tenant_limits):
        result.append(_descriptor([tenant], principal.tenant_limits))
    key_limits = principal.key_limits if _has_limits(principal.key_limits) else defaults
    if _has_limits(key_limits):
        result.append(_descriptor([tenant, key], key_limits))
    if per_model is not None and _has_limits(per_model):
        entry = ratelimit_pb2.DescriptorEntry(key="model", value=model)
        result.append(_descriptor([tenant, key, entry], per_model))
    return result


def _descriptor(
    entries: list[ratelimit_pb2.DescriptorEntry], limits: auth_pb2.Limits
) -> ratelimit_pb2.DescriptorLimits:
    item = ratelimit_pb2.DescriptorLimits(descriptor=ratelimit_pb2.Descriptor(entries=entries))
    item.quotas.extend(q for q in limits.quotas if q.limit >= 0)
    if limits.HasField("max_concurrent_requests"):
        item.max_concurrent = limits.max_concurrent_requests
    return item


def _describe(descriptor: ratelimit_pb2.Descriptor) -> str:
    return ",".join(f"{e.key}:{e.value}" for e in descriptor.entries)


def refusal(response: ratelimit_pb2.AcquireResponse) -> GatewayError:
    """RESOURCE_EXHAUSTED for a refused Acquire, with RetryInfo and one QuotaFailure violation per quota."""
    violations: list[QuotaViolation] = []
    budget = False
    units: set[str] = set()
    for status in response.statuses:
        if not status.exceeded:
            continue
        unit = _UNIT_NAMES.get(status.quota.unit, "requests")
        window = _WINDOW_NAMES.get(status.quota.window, "window")
        budget = budget or status.quota.unit == quota_pb2.UNIT_COST_MICRO_USD
        units.add(unit)
        limit = status.quota.limit
        shown = f"${limit / 1_000_000:.2f}" if unit == "spend" else str(limit)
        violations.append(
            QuotaViolation(f"{_describe(status.descriptor)} {unit}/{window}", f"Limit {shown} per {window} reached.")
        )
    retry_after = response.retry_after.seconds + response.retry_after.nanos / 1e9
    if response.degraded and not violations:
        return GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.DEPENDENCY_UNAVAILABLE,
            "Rate limiting is unavailable; the request was refused. Please retry shortly.",
            {"retryable": "true"},
            retry_after_s=retry_after or 1.0,
        )
    if not violations:
        violations.append(QuotaViolation("concurrency", "Too many requests in flight."))
        units.add("concurrency")
    if budget:
        message = "You exceeded your current quota (spend budget). The budget resets at the start of its next window."
        reason = Reason.BUDGET_EXCEEDED
    else:
        subjects = "; ".join(v.subject + ": " + v.description for v in violations)
        message = f"Rate limit reached ({subjects}). Please try again in {max(1, math.ceil(retry_after))}s."
        reason = Reason.RATE_LIMITED
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason,
        message,
        {"limit_type": ",".join(sorted(units))},
        retry_after_s=retry_after,
        quota_violations=violations,
    )


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it in x-ratelimit-reset-*: "6ms", "1s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True)
class _Tightest:
    limit: int
    remaining: int
    reset_s: float


_HEADER_UNITS = {quota_pb2.UNIT_REQUESTS: "requests", quota_pb2.UNIT_TOKENS: "tokens"}


def headers(statuses: list[ratelimit_pb2.QuotaStatus]) -> list[tuple[str, str]]:
    """``x-ratelimit-*`` metadata for requests and tokens: the tightest quota of each unit."""
    items: list[tuple[str, int, int, float]] = []
    for status in statuses:
        unit = _HEADER_UNITS.get(status.quota.unit)
        if unit is not None:
            reset = status.reset_after.seconds + status.reset_after.nanos / 1e9
            items.append((unit, status.quota.limit, status.remaining, reset))
    return tightest_headers(items)


def tightest_headers(items: list[tuple[str, int, int, float]]) -> list[tuple[str, str]]:
    """``x-ratelimit-*`` metadata from (unit name, limit, remaining, reset seconds) per quota: the
    tightest quota of each unit (least remaining, then soonest reset)."""
    tightest: dict[str, _Tightest] = {}
    for unit, limit, remaining, reset in items:
        current = tightest.get(unit)
        if current is None or (remaining, reset) < (current.remaining, current.reset_s):
            tightest[unit] = _Tightest(limit, max(0, remaining), reset)
    result: list[tuple[str, str]] = []
    for unit, t in sorted(tightest.items()):
        result += [
            (f"x-ratelimit-limit-{unit}", str(t.limit)),
            (f"x-ratelimit-remaining-{unit}", str(t.remaining)),
            (f"x-ratelimit-reset-{unit}", format_reset(t.reset_s)),
        ]
    return result


def _unit_window(quota: quota_pb2.Quota) -> str:
    return f"{_UNIT_NAMES.get(quota.unit, 'requests')}/{_WINDOW_NAMES.get(quota.window, 'window')}"


def _amount(amounts: ratelimit_pb2.Amounts, unit: int) -> int:
    if unit == quota_pb2.UNIT_TOKENS:
        return amounts.tokens
    if unit == quota_pb2.UNIT_COST_MICRO_USD:
        return amounts.cost_micro_usd
    return amounts.requests


def _shown(unit: int, value: int) -> str:
    return f"${value / 1_000_000:.6f}" if unit == quota_pb2.UNIT_COST_MICRO_USD else f"{value} tokens"


def check_fits(
    limits: list[ratelimit_pb2.DescriptorLimits],
    reservation: ratelimit_pb2.Amounts,
    prompt_only: ratelimit_pb2.Amounts,
    prompt_param: str,
    completion_param: str,
) -> None:
    """INVALID_ARGUMENT when ``reservation`` is larger than a whole window of some token or spend
    quota: no wait would ever admit it, so a 429 with a Retry-After would send the client into a loop.

    The error names the parameter to change: the prompt's (``prompt_param``) when the prompt alone
    (``prompt_only``) is too large, else the one that sized the answer (``completion_param``).
    A quota of 0 is left to Acquire: it means "nothing now" (a frozen key), not a request too large.
    """
    for item in limits:
        for quota in item.quotas:
            if quota.unit not in (quota_pb2.UNIT_TOKENS, quota_pb2.UNIT_COST_MICRO_USD) or quota.limit <= 0:
                continue
            needed = _amount(reservation, quota.unit)
            if needed <= quota.limit:
                continue
            param = prompt_param if _amount(prompt_only, quota.unit) > quota.limit else completion_param
            subject = f"{_describe(item.descriptor)} {_unit_window(quota)}"
            error = invalid_argument(
                f"This request can never fit the limit {subject} of {_shown(quota.unit, quota.limit)}: it "
                f"reserves {_shown(quota.unit, needed)} (the prompt counted as a ceiling, plus max_tokens "
                f"for each of n choices). Change `{param}` so that it fits.",
                param,
            )
            error.metadata = {**error.metadata, "limit": subject, "limit_value": str(quota.limit)}
            raise error


def counts_usage(limits: list[ratelimit_pb2.DescriptorLimits]) -> bool:
    """Whether any of ``limits`` counts tokens or spend (else a stream has nothing to outgrow)."""
    usage_units = (quota_pb2.UNIT_TOKENS, quota_pb2.UNIT_COST_MICRO_USD)
    return any(quota.unit in usage_units and quota.limit > 0 for item in limits for quota in item.quotas)


def without_concurrency(limits: list[ratelimit_pb2.DescriptorLimits]) -> list[ratelimit_pb2.DescriptorLimits]:
    """The same quotas without concurrency caps: a stream growing its reservation holds no new slot."""
    result: list[ratelimit_pb2.DescriptorLimits] = []
    for item in limits:
        copy = ratelimit_pb2.DescriptorLimits()
        copy.CopyFrom(item)
        copy.ClearField("max_concurrent")
        result.append(copy)
    return result


def stream_stopped(response: ratelimit_pb2.AcquireResponse, completion_tokens: int) -> GatewayError:
    """The error that ends a stream whose answer outgrew its reservation and could not get more.

    RESOURCE_EXHAUSTED like any refusal, but the message says the answer is incomplete, so a client
    cannot take what it received for the whole answer.
    """
    refused = refusal(response)
    refused.message = (
        f"The answer was stopped after about {completion_tokens} tokens because continuing would exceed "
        f"a limit; what was received is incomplete. {refused.message}"
    )
    refused.metadata = {**refused.metadata, "stream_stopped": "true"}
    return refused
