"""Form fields ↔ protobuf: limits as a grid of (unit, window) inputs, model lists as text.

Only the shape is checked here (a number is a number); whether a limit or a model pattern is
acceptable is auth's call, and its answer is shown as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.auth.v1 import auth_pb2
from gateway.quota.v1 import quota_pb2

UNITS = (
    ("requests", quota_pb2.UNIT_REQUESTS, "Requests"),
    ("tokens", quota_pb2.UNIT_TOKENS, "Tokens"),
    ("cost_usd", quota_pb2.UNIT_COST_MICRO_USD, "Budget (USD)"),
)
WINDOWS = (
    ("minute", quota_pb2.WINDOW_MINUTE),
    ("day", quota_pb2.WINDOW_DAY),
    ("month", quota_pb2.WINDOW_MONTH),
)
MICRO = 1_000_000
# Past int64 the RPC would fail to serialise; far past any real limit anyway.
MAX_LIMIT = 2**62


class FormError(ValueError):
    """A field that is not of the shape the form asks for."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class LimitCell:
    """One input of the limits grid: its form name and its current value as text."""

    name: str
    value: str


def limit_grid(prefix: str, limits: auth_pb2.Limits) -> list[tuple[str, list[LimitCell]]]:
    """Rows (unit label, cells per window) of ``limits`` for the form, empty where there is no quota."""
    current = {(q.unit, q.window): q.limit for q in limits.quotas}
    rows = []
    for unit_name, unit, label in UNITS:
        cells = []
        for window_name, window in WINDOWS:
            value = current.get((unit, window))
            text = "" if value is None else _format_limit(unit, value)
            cells.append(LimitCell(f"{prefix}_{unit_name}_{window_name}", text))
        rows.append((label, cells))
    return rows


def _format_limit(unit: quota_pb2.Unit.ValueType, value: int) -> str:
    if unit == quota_pb2.UNIT_COST_MICRO_USD:
        return str((Decimal(value) / MICRO).normalize())
    return str(value)


def parse_limits(form: dict[str, str], prefix: str) -> auth_pb2.Limits:
    """The Limits the grid under ``prefix`` describes; an empty cell is no quota."""
    limits = auth_pb2.Limits()
    for unit_name, unit, _ in UNITS:
        for window_name, window in WINDOWS:
            name = f"{prefix}_{unit_name}_{window_name}"
            raw = form.get(name, "").strip()
            if not raw:
                continue
            value = _parse_money(name, raw) if unit == quota_pb2.UNIT_COST_MICRO_USD else _parse_count(name, raw)
            limits.quotas.add(unit=unit, window=window, limit=value)
    concurrent = form.get(f"{prefix}_concurrent", "").strip()
    if concurrent:
        limits.max_concurrent_requests = min(_parse_count(f"{prefix}_concurrent", concurrent), 2**31 - 1)
    return limits


def concurrency(limits: auth_pb2.Limits) -> str:
    """The concurrency cap as the form shows it."""
    return str(limits.max_concurrent_requests) if limits.HasField("max_concurrent_requests") else ""


def _parse_count(name: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) > MAX_LIMIT:
        raise FormError(name, f"'{name}' must be a whole number from 0, not {raw!r}.")
    return int(raw)


def _parse_money(name: str, raw: str) -> int:
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0 or amount * MICRO > MAX_LIMIT:
        raise FormError(name, f"'{name}' must be an amount in USD from 0, not {raw!r}.")
    return int(amount * MICRO)


def parse_list(raw: str) -> list[str]:
    """Comma- or line-separated values, trimmed, without empties."""
    return [part.strip() for part in raw.replace("\n", ",").split(",") if part.strip()]


def parse_int(form: dict[str, str], name: str, default: int = 0) -> int:
    """An optional signed integer field."""
    raw = form.get(name, "").strip()
    if not raw:
        return default
    if not raw.lstrip("-").isdigit() or abs(int(raw)) > 2**31 - 1:
        raise FormError(name, f"'{name}' must be a whole number, not {raw!r}.")
    return int(raw)
