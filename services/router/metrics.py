"""The router's Prometheus metrics: what requests did, cost and were refused.

Label values must come from a bounded set, or every distinct value a client sends becomes a
time series of its own (2,500 made-up model names once grew the router's series from 86 to
40,086). Models and providers are therefore labelled through :class:`MetricLabels`, which knows
only what the configuration names; the other labels (operation, outcome, gRPC code, limit
reason, streamed) are closed sets by construction.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

from gateway_common.config import GatewayConfig, effective_providers

OTHER = "other"
"""The one label value every model or provider the configuration does not name shares."""

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests by operation, model, provider and outcome.",
    ["operation", "model", "provider", "outcome"],
)
DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from admission to the end of the answer.",
    ["operation", "streamed"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
FIRST_CHUNK = Histogram(
    "gateway_time_to_first_chunk_seconds",
    "Time from admission to the first streamed chunk.",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TOKENS = Counter("gateway_tokens_total", "Tokens by kind (prompt, completion).", ["kind", "model", "provider"])
COST = Counter("gateway_cost_micro_usd_total", "Spend in micro-USD.", ["model", "provider"])
REJECTIONS = Counter("gateway_limit_rejections_total", "Requests refused by a limit or budget.", ["reason"])
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total", "Failed provider attempts by provider and gRPC code.", ["provider", "code"]
)

_Metric = TypeVar("_Metric", Counter, Histogram)


class Children(Generic[_Metric]):
    """A metric's children by label values, each looked up once.

    ``labels()`` checks its arguments, converts them and takes the metric's lock on every call; a
    request that ends counts five series, so the router keeps the children it has seen. Label values
    are a bounded set (see :class:`MetricLabels`), and so is this cache.
    """

    def __init__(self, metric: _Metric) -> None:
        self._metric: _Metric = metric
        self._children: dict[tuple[str, ...], _Metric] = {}

    def __call__(self, *values: str) -> _Metric:
        """The child for ``values``, as ``metric.labels(*values)`` returns it."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


REQUESTS_BY = Children(REQUESTS)
DURATION_BY = Children(DURATION)
FIRST_CHUNK_BY = Children(FIRST_CHUNK)
TOKENS_BY = Children(TOKENS)
COST_BY = Children(COST)


class MetricLabels:
    """Bounded label values for models and providers, drawn from the configuration only.

    A model keeps its name when the configuration names it: an alias, a deployment
    (``provider:model`` of an alias), or the default model. Any other ``provider:model`` of a
    known provider is labelled ``provider:*``; anything else is :data:`OTHER`. So the number of
    series is fixed by the configuration, whatever names clients send.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self._providers = frozenset(effective_providers(config))
        models = {config.default_model, *config.models}
        for alias in config.models.values():
            models.update(f"{d.provider}:{d.model}" for d in alias.deployments)
        self._models = frozenset(models)

    def model(self, name: str) -> str:
        """The label for the model a request named (or resolved to)."""
        if name in self._models:
            return name
        provider, sep, _ = name.partition(":")
        return f"{provider}:*" if sep and provider in self._providers else OTHER

    def provider(self, name: str) -> str:
        """The label for a provider; empty (no attempt was made) stays empty."""
        return name if not name or name in self._providers else OTHER
