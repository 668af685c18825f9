"""``python -m bench.compare BEFORE.json AFTER.json``: a before/after table of two bench runs.

Each run is ``python -m bench --json PATH`` (``make bench BENCH_ARGS="--json PATH"``) on one
checkout. Rows are matched by scenario, figure and column (direct, or the gateway in one request
log mode); a figure only one run has is listed as such, so nothing is silently dropped.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.report import Row, Table, fmt, from_json


def _columns(row: Row) -> dict[str, float | None]:
    columns: dict[str, float | None] = {}
    if row.direct is not None:
        columns["direct"] = row.direct
    columns.update({f"gateway ({mode})": value for mode, value in row.gateway.items()})
    return columns


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None or math.isnan(before) or math.isnan(after):
        return ""
    if before == 0:
        return "" if after == 0 else "new"
    return f"{(after - before) / abs(before) * 100:+.0f}%"


def compare(before: list[Table], after: list[Table]) -> list[list[str]]:
    """Rows of [scenario, figure (unit), column, before, after, change] for every figure of either run."""
    after_tables = {t.name: t for t in after}
    lines: list[list[str]] = []
    names = [t.name for t in before] + [t.name for t in after if t.name not in {b.name for b in before}]
    before_tables = {t.name: t for t in before}
    for name in names:
        b_table, a_table = before_tables.get(name), after_tables.get(name)
        either = b_table or a_table
        assert either is not None  # every name comes from one of them
        title = either.title
        b_rows = {r.key: r for r in b_table.rows} if b_table else {}
        a_rows = {r.key: r for r in a_table.rows} if a_table else {}
        keys = list(b_rows) + [k for k in a_rows if k not in b_rows]
        for key in keys:
            b_row, a_row = b_rows.get(key), a_rows.get(key)
            shown = b_row or a_row
            assert shown is not None
            b_cols = _columns(b_row) if b_row else {}
            a_cols = _columns(a_row) if a_row else {}
            for column in list(b_cols) + [c for c in a_cols if c not in b_cols]:
                b_value, a_value = b_cols.get(column), a_cols.get(column)
                lines.append(
                    [
                        title,
                        "  " * shown.indent + f"{shown.label} ({shown.unit})",
                        column,
                        fmt(b_value, shown.unit) if column in b_cols else "(absent)",
                        fmt(a_value, shown.unit) if column in a_cols else "(absent)",
                        _change(b_value, a_value),
                    ]
                )
    return lines


def render(before_meta: dict[str, Any], after_meta: dict[str, Any], lines: list[list[str]]) -> str:
    """The comparison as text, one block per scenario."""
    out = [
        f"before: {before_meta.get('label')} ({before_meta.get('started')}, pinning: {before_meta.get('pinning')})",
        f"after:  {after_meta.get('label')} ({after_meta.get('started')}, pinning: {after_meta.get('pinning')})",
    ]
    header = ["", "", "before", "after", "change"]
    widths = [max(len(x) for x in col) for col in zip(header, *(line[1:] for line in lines), strict=True)]
    title = None
    for line in lines:
        if line[0] != title:
            title = line[0]
            out += [
                "",
                title,
                "  "
                + "".join(
                    h.rjust(w + 2) if i > 1 else h.ljust(w + 2)
                    for i, (h, w) in enumerate(zip(header, widths, strict=True))
                ),
            ]
        cells = line[1:]
        out.append(
            "  "
            + "".join(
                c.rjust(w + 2) if i > 1 else c.ljust(w + 2) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Print the before/after table of two ``--json`` files."""
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    b_meta, _, b_tables = from_json(json.loads(args.before.read_text()))
    a_meta, _, a_tables = from_json(json.loads(args.after.read_text()))
    print(render(b_meta, a_meta, compare(b_tables, a_tables)))


if __name__ == "__main__":
    main()
