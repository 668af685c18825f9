"""Planning: model resolution, weighted strategy, route health, limits and headers (pure, fast)."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.config import GatewayConfig, LimitsConfig
from gateway_common.errors import GatewayError, Reason
from services.router import quotas
from services.router.planner import Candidate, Planner
from services.router.price_table import Price
from services.router.pricing import cost_micro_usd
from services.router.route_health import RouteHealth

CONFIG = GatewayConfig.model_validate(
    {
        "default_model": "mock:default",
        "models": {
            "fast": {
                "deployments": [
                    {
                        "provider": "openai",
                        "model": "gpt-4o-mini",
                        "input_usd_per_million": 0.15,
                        "output_usd_per_million": 0.6,
                    },
                    {"provider": "mock", "model": "backup"},
                ]
            },
            "spread": {
                "strategy": "weighted",
                "deployments": [
                    {"provider": "mock", "model": "a", "weight": 1},
                    {"provider": "mock", "model": "b", "weight": 9},
                ],
            },
        },
    }
)


def test_names_resolve_to_candidates() -> None:
    planner = Planner(CONFIG)
    assert [c.id for c in planner.plan("fast").candidates] == ["openai:gpt-4o-mini", "mock:backup"]
    assert [c.id for c in planner.plan("").candidates] == ["mock:default"]
    assert planner.plan("anthropic:claude-x").candidates == (Candidate("anthropic", "claude-x"),)
    # A provider:model that an alias also deploys carries the alias's price.
    assert planner.plan("openai:gpt-4o-mini").candidates[0].price.per_million() == (0.15, 0.6)
    for bad in ("nope", "nope:x", "openai:", ":x"):
        with pytest.raises(GatewayError) as info:
            planner.plan(bad)
        assert info.value.code == grpc.StatusCode.NOT_FOUND and info.value.reason == Reason.MODEL_NOT_FOUND


def test_weighted_strategy_draws_by_weight() -> None:
    draws = iter([0.5, 0.5] * 1000)
    planner = Planner(CONFIG, rng=lambda: next(draws))
    # With equal draws the heavier deployment wins: 0.5 ** (1/9) > 0.5 ** (1/1).
    assert planner.plan("spread").candidates[0].model == "b"
    import random

    seeded = random.Random(7)
    planner = Planner(CONFIG, rng=seeded.random)
    firsts = [planner.plan("spread").candidates[0].model for _ in range(2000)]
    assert 0.85 < firsts.count("b") / len(firsts) < 0.95
    assert all(len(planner.plan("spread").candidates) == 2 for _ in range(10))


async def test_route_health_trips_after_repeated_failures_and_recovers() -> None:
    now = [0.0]
    health = RouteHealth(failures_to_trip=3, cooldown_s=30, clock=lambda: now[0])
    a, b = Candidate("p", "a"), Candidate("p", "b")
    for _ in range(2):
        health.record_failure(a)
    assert await health.order([a, b]) == (a, b)
    health.record_failure(a)
    assert await health.order([a, b]) == (b, a) and not health.is_healthy(a)
    now[0] = 31.0
    assert await health.order([a, b]) == (a, b)  # half-open: this request probes it
    health.record_failure(a)
    assert await health.order([a, b]) == (b, a)  # the probe failed: open again at once
    health.record_success(a)
    assert await health.order([a, b]) == (a, b)
    for _ in range(3):
        health.record_failure(b)
        health.record_failure(a)
    assert await health.order([a, b]) == (a, b)  # all unhealthy: the usual order, nobody dropped


def test_pricing_rounds_up_to_whole_micro_usd() -> None:
    price = Price(
        priced=True, source="config", input_usd_per_million=Decimal("0.15"), output_usd_per_million=Decimal("0.6")
    )
    candidate = Candidate("p", "m", price)
    assert cost_micro_usd(candidate, 10, 10) == 8  # 1.5 + 6 = 7.5
    assert cost_micro_usd(Candidate("p", "free"), 1000, 1000) == 0


def test_default_limits_leave_out_zeroes() -> None:
    limits = quotas.default_limits(LimitsConfig(requests_per_minute=5, tokens_per_minute=0, budget_usd_per_month=2.5))
    assert [(q.unit, q.window, q.limit) for q in limits.quotas] == [
        (quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MINUTE, 5),
        (quota_pb2.UNIT_COST_MICRO_USD, quota_pb2.WINDOW_MONTH, 2_500_000),
    ]


def test_descriptors_tenant_key_and_model() -> None:
    own = auth_pb2.Limits(quotas=[quota_pb2.Quota(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_DAY, limit=9)])
    principal = auth_pb2.Principal(tenant_id="t", key_id="k", tenant_limits=own)
    defaults = quotas.default_limits(LimitsConfig(requests_per_minute=5))
    items = quotas.descriptor_limits(
        principal, defaults, "fast", quotas.default_limits(LimitsConfig(requests_per_minute=1, tokens_per_minute=0))
    )
    assert [[(e.key, e.value) for e in i.descriptor.entries] for i in items] == [
        [("tenant", "t")],
        [("tenant", "t"), ("key", "k")],
        [("tenant", "t"), ("key", "k"), ("model", "fast")],
    ]
    assert items[1].quotas[0].limit == 5  # the key had no limits of its own: the defaults


def test_headers_show_the_tightest_quota_per_unit() -> None:
    def status(unit: int, window: int, limit: int, remaining: int, reset_s: int) -> ratelimit_pb2.QuotaStatus:
        result = ratelimit_pb2.QuotaStatus(
            quota=quota_pb2.Quota(unit=unit, window=window, limit=limit), remaining=remaining
        )
        result.reset_after.seconds = reset_s
        return result

    headers = dict(
        quotas.headers(
            [
                status(quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MINUTE, 60, 59, 30),
                status(quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_DAY, 1000, 10, 3600 * 5 + 61),
                status(quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_MINUTE, 1000, 900, 30),
                status(quota_pb2.UNIT_COST_MICRO_USD, quota_pb2.WINDOW_MONTH, 5, 0, 100),
            ]
        )
    )
    assert headers == {
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": "5h1m1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "30s",
    }
    assert quotas.format_reset(0.006) == "6ms" and quotas.format_reset(360) == "6m0s"
