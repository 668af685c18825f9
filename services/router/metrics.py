"""The router's Prometheus metrics: what requests did, cost and were refused."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
