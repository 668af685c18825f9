"""The CLI's limit syntax, both ways: flags such as ``--budget-usd 50/month`` to quotas, and quotas
back to short text (``60 req/min, $50.00/month``). Pure functions, no I/O."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2

MICRO_USD_PER_USD = 1_000_000
WINDOWS: dict[str, quota_pb2.Window.ValueType] = {
    "minute": quota_pb2.WINDOW_MINUTE,
    "day": quota_pb2.WINDOW_DAY,
    "month": quota_pb2.WINDOW_MONTH,
}
_WINDOW_SHORT = {quota_pb2.WINDOW_MINUTE: "min", quota_pb2.WINDOW_DAY: "day", quota_pb2.WINDOW_MONTH: "month"}
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Quota = quota_pb2.Quota


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (a limit of 0 allows nothing)."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_budget(text: str) -> Quota:
    """``50/month``, ``$5/day`` or ``0.25/minute``: a spend quota in micro-USD (50/month -> 50_000_000)."""
    amount_text, slash, window_text = text.strip().partition("/")
    window = WINDOWS.get(window_text.strip().lower())
    if not slash or window is None:
        raise argparse.ArgumentTypeError(
            f"expected AMOUNT/WINDOW such as 50/month (windows: {', '.join(WINDOWS)}), got {text!r}"
        )
    try:
        usd = Decimal(amount_text.strip().removeprefix("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected an amount in USD such as 50 or 2.5, got {text!r}") from None
    if not usd.is_finite() or usd < 0:
        raise argparse.ArgumentTypeError(f"the amount must be a number of at least 0, got {text!r}")
    micro = usd * MICRO_USD_PER_USD
    if micro != micro.to_integral_value():
        raise argparse.ArgumentTypeError(f"the amount has more than 6 decimal places: {text!r}")
    return Quota(unit=quota_pb2.UNIT_COST_MICRO_USD, window=window, limit=int(micro))


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s`` or ``2w``: a positive duration."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30d, 12h, 90m, 45s or 2w, got {text!r}")
    amount, unit = int(match.group(1)), match.group(2)
    if amount <= 0:
        raise argparse.ArgumentTypeError(f"the duration must be positive, got {text!r}")
    return timedelta(**{_DURATION_UNITS[unit]: amount})


def parse_list(text: str) -> list[str]:
    """A comma-separated list (``openai:*,mock:*``), blanks dropped; at least one entry."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def quotas_from_flags(
    rpm: int | None = None,
    rpd: int | None = None,
    tpm: int | None = None,
    tpd: int | None = None,
    budgets: Sequence[Quota] = (),
) -> list[Quota]:
    """The quotas the limit flags ask for, in flag order."""
    quotas: list[Quota] = []
    for limit, unit, window in (
        (rpm, quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MINUTE),
        (rpd, quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_DAY),
        (tpm, quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_MINUTE),
        (tpd, quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_DAY),
    ):
        if limit is not None:
            quotas.append(Quota(unit=unit, window=window, limit=limit))
    quotas.extend(budgets)
    return quotas


def merge_limits(current: auth_pb2.Limits, quotas: Iterable[Quota], concurrency: int | None) -> auth_pb2.Limits:
    """``current`` with each new quota replacing the one of the same unit and window (others kept),
    and the concurrency cap replaced when given."""
    merged: dict[tuple[int, int], Quota] = {(q.unit, q.window): q for q in current.quotas}
    for quota in quotas:
        merged[(quota.unit, quota.window)] = quota
    limits = auth_pb2.Limits(quotas=list(merged.values()))
    if concurrency is not None:
        limits.max_concurrent_requests = concurrency
    elif current.HasField("max_concurrent_requests"):
        limits.max_concurrent_requests = current.max_concurrent_requests
    return limits


def describe_quota(quota: Quota) -> str:
    """``60 req/min``, ``100000 tok/day``, ``$50.00/month``."""
    window = _WINDOW_SHORT.get(quota.window, "?")
    if quota.unit == quota_pb2.UNIT_COST_MICRO_USD:
        usd = Decimal(quota.limit) / MICRO_USD_PER_USD
        return f"${usd:.2f}/{window}" if usd == usd.quantize(Decimal("0.01")) else f"${usd.normalize()}/{window}"
    unit = {quota_pb2.UNIT_REQUESTS: "req", quota_pb2.UNIT_TOKENS: "tok"}.get(quota.unit, "?")
    return f"{quota.limit} {unit}/{window}"


def describe_limits(limits: auth_pb2.Limits, empty: str = "-") -> str:
    """All quotas and the concurrency cap in one line; ``empty`` when there are none."""
    parts = [describe_quota(q) for q in limits.quotas]
    if limits.HasField("max_concurrent_requests"):
        parts.append(f"{limits.max_concurrent_requests} concurrent")
    return ", ".join(parts) or empty
