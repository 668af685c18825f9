"""Prices from the genai-prices dataset, config overrides, the unpriced marker and the policy that refuses it."""

from __future__ import annotations

import grpc
import pytest
from genai_prices import Usage

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason
from services.router import catalog, policy
from services.router.planner import Planner
from services.router.pricing import cost_micro_usd

CONFIG = GatewayConfig.model_validate(
    {
        "providers": {
            "local": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1"},
            "groq": {"type": "openai_compatible", "base_url": "https://api.groq.com/openai/v1"},
            "az": {"type": "azure", "base_url": "https://example.openai.azure.com"},
            "claude": {"type": "anthropic"},
        },
        "models": {
            "cheap": {
                "deployments": [
                    {"provider": "openai", "model": "gpt-4o", "input_usd_per_million": 1, "output_usd_per_million": 2}
                ]
            },
            "half": {"deployments": [{"provider": "openai", "model": "gpt-4.1-mini", "output_usd_per_million": 1.0}]},
            "mixed": {
                "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "local", "model": "llama"}]
            },
        },
    }
)
PLANNER = Planner(CONFIG)


def _only(model: str):  # type: ignore[no-untyped-def]
    (candidate,) = PLANNER.plan(model).candidates
    return candidate


@pytest.mark.parametrize(
    ("model", "per_million"),
    [
        ("openai:gpt-4o-mini", (0.15, 0.6)),
        ("anthropic:claude-3-5-haiku-latest", (0.8, 4.0)),
        ("claude:claude-sonnet-4-5", (3.0, 15.0)),
        ("gemini:gemini-2.5-pro", (1.25, 10.0)),
        ("gemini:gemini-2.0-flash", (0.1, 0.4)),
        ("azure:gpt-4o-mini", (0.15, 0.6)),
        ("az:gpt-4o-mini", (0.15, 0.6)),
    ],
)
def test_known_models_have_the_datasets_prices(model: str, per_million: tuple[float, float]) -> None:
    candidate = _only(model)
    assert candidate.price.priced and candidate.price.source == "dataset"
    assert candidate.price.per_million() == pytest.approx(per_million)
    prompt, completion = 1000, 500
    expected = (prompt * per_million[0] + completion * per_million[1]) / 1_000_000
    assert cost_micro_usd(candidate, prompt, completion) == pytest.approx(expected * 1_000_000, abs=1)


def test_tiers_and_cache_reads_follow_the_dataset() -> None:
    sonnet = _only("anthropic:claude-sonnet-4-5")
    # Above 200k prompt tokens every input token pays the higher tier.
    assert cost_micro_usd(sonnet, 300_000, 0) == 300_000 * 6
    mini = _only("openai:gpt-4o-mini")
    # Cached prompt tokens are cache reads ($0.075/M), the rest input ($0.15/M).
    assert cost_micro_usd(mini, 1_000_000, 0, cached_tokens=1_000_000) == 75_000
    assert cost_micro_usd(mini, 1_000_000, 0, cached_tokens=0) == 150_000


def test_config_prices_override_the_dataset() -> None:
    (alias,) = PLANNER.plan("cheap").candidates
    assert alias.price.source == "config" and alias.price.per_million() == (1.0, 2.0)
    assert cost_micro_usd(alias, 1_000_000, 1_000_000) == 3_000_000
    # A provider:model an alias prices carries the alias's price too.
    assert _only("openai:gpt-4o").price.per_million() == (1.0, 2.0)
    # One side overridden: the other from the dataset.
    (half,) = PLANNER.plan("half").candidates
    assert half.price.per_million() == (0.4, 1.0)  # gpt-4.1-mini's dataset input price
    assert cost_micro_usd(half, 1_000_000, 1_000_000) == 1_400_000


def test_unknown_models_are_unpriced_and_the_mock_is_free() -> None:
    for model in ("local:llama", "openai:no-such-model-xyz", "gemini:no-such-model"):
        candidate = _only(model)
        assert not candidate.price.priced and candidate.price.per_million() is None
        assert cost_micro_usd(candidate, 1000, 1000) == 0
    mock = _only("mock:demo")
    assert mock.price.priced and mock.price.source == "free" and cost_micro_usd(mock, 1000, 1000) == 0
    # An OpenAI-compatible server the dataset knows by its URL is priced as that provider.
    assert _only("groq:llama-3.3-70b-versatile").price.priced


def test_model_entries_mark_unpriced() -> None:
    from gateway.chat.v1 import chat_pb2

    priced = catalog.describe(chat_pb2.Model(id="openai:gpt-4o-mini"), PLANNER.plan("openai:gpt-4o-mini").candidates)
    assert not priced.unpriced and priced.input_usd_per_million == pytest.approx(0.15)
    mixed = catalog.describe(chat_pb2.Model(id="mixed"), PLANNER.plan("mixed").candidates)
    assert mixed.unpriced and not mixed.HasField("input_usd_per_million")


def test_provider_models_come_from_the_dataset() -> None:
    ids = {entry[0] for entry in catalog.provider_models(CONFIG)}
    assert {"claude:claude-sonnet-4-5", "groq:llama-3.3-70b-versatile"} <= ids
    # A server the dataset does not know, and Azure (whose deployment names its owner picks): nothing.
    assert not any(i.startswith(("local:", "az:")) for i in ids)


def _principal(refuse: bool) -> auth_pb2.Principal:
    return auth_pb2.Principal(tenant_id="t", key_id="k", policy=auth_pb2.Policy(refuse_unpriced=refuse))


SPEND = [
    ratelimit_pb2.DescriptorLimits(
        quotas=[quota_pb2.Quota(unit=quota_pb2.UNIT_COST_MICRO_USD, window=quota_pb2.WINDOW_DAY, limit=1000)]
    )
]
REQUESTS_ONLY = [
    ratelimit_pb2.DescriptorLimits(
        quotas=[quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_MINUTE, limit=10)]
    )
]


def test_a_budget_is_a_spend_quota_or_a_cost_cap() -> None:
    assert policy.has_budget(SPEND, None)
    assert policy.has_budget(REQUESTS_ONLY, 0.5)
    assert not policy.has_budget(REQUESTS_ONLY, None)


def test_refuse_unpriced_refuses_budgeted_requests_naming_the_model() -> None:
    unpriced = PLANNER.plan("local:llama").candidates
    with pytest.raises(GatewayError) as caught:
        policy.priced_candidates(_principal(True), "local:llama", unpriced, budgeted=True)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.reason == Reason.POLICY_VIOLATION
    assert "`local:llama`" in caught.value.message
    # Without a budget, or for a tenant that accepts unpriced models, it is served.
    assert policy.priced_candidates(_principal(True), "local:llama", unpriced, budgeted=False) == unpriced
    assert policy.priced_candidates(_principal(False), "local:llama", unpriced, budgeted=True) == unpriced
    # An alias keeps its priced deployments and drops the unpriced ones.
    mixed = PLANNER.plan("mixed").candidates
    kept = policy.priced_candidates(_principal(True), "mixed", mixed, budgeted=True)
    assert [c.id for c in kept] == ["openai:gpt-4o-mini"]


def test_made_up_names_do_not_grow_the_table_forever(caplog: pytest.LogCaptureFixture) -> None:
    from services.router import price_table

    table = price_table.PriceTable(CONFIG)
    # The configured deployment without a price was reported once, at start.
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "no price known for local:llama: its usage is recorded at $0 and budgets cannot count it"
    ]
    for i in range(price_table._CACHE_SIZE + 50):
        assert not table.price("local", f"made-up-{i}").priced
    assert len(table._cache) == price_table._CACHE_SIZE
    assert table.price("openai", "gpt-4o-mini").priced


def test_the_dataset_loads_without_the_network() -> None:
    import subprocess
    import sys

    # A fresh interpreter whose sockets all refuse: the bundled data must load and price anyway.
    script = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from gateway_common.config import GatewayConfig\n"
        "from services.router.planner import Planner\n"
        "(c,) = Planner(GatewayConfig()).plan('openai:gpt-4o-mini').candidates\n"
        "print(c.price.per_million())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(0.15, 0.6)"


@pytest.mark.parametrize("model", ["openai:gpt-4o-mini", "gemini:gemini-2.0-flash", "openai:text-embedding-3-small"])
def test_flat_prices_cost_what_the_dataset_says(model: str) -> None:
    price = _only(model).price
    assert price.dataset is not None
    for prompt, completion in ((0, 0), (1, 1), (9, 6), (12_345, 678), (2_000_000, 1_000_000)):
        expected = price.dataset.calc_price(Usage(input_tokens=prompt, output_tokens=completion))
        assert price.cost_usd(prompt, completion) == expected["input_price"] + expected["output_price"]
