"""The benchmark's figures: tables of rows (direct baseline beside each gateway run), as text and JSON.

A row's gateway values are keyed by mode (``log on``, ``log off``: the suite ran once per request
log setting), so one table shows what the request log costs. The JSON is the same structure, which
``python -m bench.compare`` reads back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Delta = Literal["diff", "ratio", ""]


@dataclass
class Row:
    """One measured quantity."""

    key: str
    """Stable identifier, e.g. ``cpu_per_request.router`` (what compare matches on)."""
    label: str
    unit: str
    direct: float | None = None
    """The same measurement made directly against the upstream (None: it has no direct counterpart)."""
    gateway: dict[str, float] = field(default_factory=dict)
    """The measurement through the gateway, per mode."""
    delta: Delta = ""
    """How the gateway compares with direct: ``diff`` (gateway - direct), ``ratio`` (gateway / direct)."""
    indent: int = 0


@dataclass
class Table:
    """One scenario's figures."""

    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, mode: str, row: Row) -> None:
        """Merge ``row`` (carrying at most one gateway value, for ``mode``) into the table."""
        for existing in self.rows:
            if existing.key == row.key:
                existing.gateway.update(row.gateway)
                if existing.direct is None:
                    existing.direct = row.direct
                return
        self.rows.append(row)


def fmt(value: float | None, unit: str = "") -> str:
    """A figure with about three significant digits (counts as whole numbers when they are)."""
    if value is None or math.isnan(value):
        return "-"
    if unit == "count" and float(value).is_integer():
        return f"{value:.0f}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _delta(row: Row, gateway: float | None) -> str:
    if gateway is None or row.direct is None or not row.delta:
        return ""
    if row.delta == "diff":
        return ("+" if gateway >= row.direct else "") + fmt(gateway - row.direct)
    return f"x{gateway / row.direct:.2f}" if row.direct else ""


def render(table: Table, modes: list[str]) -> str:
    """The table as aligned text: label (unit) | direct | per mode: gateway, vs direct (the direct
    columns only when some row has a direct counterpart)."""
    params = ", ".join(f"{k} {v}" for k, v in table.params.items())
    lines = [f"{table.title}" + (f"  [{params}]" if params else "")]
    with_direct = any(row.direct is not None for row in table.rows)
    headers = ["", "direct"] if with_direct else [""]
    for mode in modes:
        headers.append(f"gateway ({mode})" if len(modes) > 1 else "gateway")
        headers += ["vs direct"] if with_direct else []
    cells = [headers]
    for row in table.rows:
        line = ["  " * row.indent + f"{row.label} ({row.unit})"]
        line += [fmt(row.direct, row.unit) if row.direct is not None else ""] if with_direct else []
        for mode in modes:
            value = row.gateway.get(mode)
            line.append(fmt(value, row.unit) if value is not None else "")
            line += [_delta(row, value)] if with_direct else []
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        lines.append(
            "  " + r[0].ljust(widths[0]) + "".join(c.rjust(w + 2) for c, w in zip(r[1:], widths[1:], strict=True))
        )
    lines += [f"  note: {note}" for note in table.notes]
    return "\n".join(lines)


def to_json(meta: dict[str, Any], modes: list[str], tables: list[Table]) -> dict[str, Any]:
    """Everything as plain JSON data (NaN becomes null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    result: dict[str, Any] = clean({"meta": meta, "modes": modes, "tables": [asdict(t) for t in tables]})
    return result


def from_json(data: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[Table]]:
    """Read back what :func:`to_json` wrote."""
    tables = []
    for t in data["tables"]:
        rows = [Row(**r) for r in t["rows"]]
        tables.append(Table(name=t["name"], title=t["title"], params=t["params"], rows=rows, notes=t["notes"]))
    return data["meta"], list(data["modes"]), tables
