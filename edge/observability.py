"""Response headers that AI Gateway's users read: time taken, cost, and its rate-limit names.

``X-Response-Time-Ms`` is set on every response by ``edge.middleware.RequestContextMiddleware``
(for a stream, the time to its headers), from the clock of the latency histogram. ``X-Cost-USD``
comes from the router's ``x-gateway-cost-usd`` trailer, and ``X-RateLimit-Remaining`` /
``X-RateLimit-Reset-Ms`` restate the request window the router already reports as OpenAI's
``x-ratelimit-remaining-requests`` / ``x-ratelimit-reset-requests``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

RESPONSE_TIME_HEADER = "x-response-time-ms"
COST_HEADER = "x-cost-usd"
COST_TRAILER = "x-gateway-cost-usd"
"""The router's trailing metadata: the request's actual cost in USD, as a decimal string."""
REMAINING_HEADER = "x-ratelimit-remaining"
RESET_MS_HEADER = "x-ratelimit-reset-ms"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def duration_ms(text: str) -> int | None:
    """Milliseconds in an OpenAI reset duration ("6ms", "1s", "6m0s", "1h2m3s"); None if it is not one."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(value + unit for value, unit in parts) != text:
        return None
    return round(sum(float(value) * _UNIT_MS[unit] for value, unit in parts))


def window_headers(headers: dict[str, str]) -> dict[str, str]:
    """AI Gateway's names for the request window, from OpenAI's ``x-ratelimit-*`` headers present."""
    extra: dict[str, str] = {}
    remaining = headers.get("x-ratelimit-remaining-requests")
    if remaining is not None:
        extra[REMAINING_HEADER] = remaining
    reset = headers.get("x-ratelimit-reset-requests")
    reset_ms = duration_ms(reset) if reset is not None else None
    if reset_ms is not None:
        extra[RESET_MS_HEADER] = str(reset_ms)
    return extra


def cost_usd(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The cost the router reported in its trailers, in USD; None when it sent none."""
    for key, value in trailing_metadata or ():
        if key == COST_TRAILER and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return None
    return None


def format_usd(value: float) -> str:
    """A cost as a plain decimal (micro-USD precision, no exponent), as the header carries it."""
    return f"{value:.6f}"
