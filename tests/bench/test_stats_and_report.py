"""Percentiles, the tables, their JSON, and the before/after comparison."""

from __future__ import annotations

import json
import math

import pytest

from bench.compare import compare, render
from bench.report import Row, Table, fmt, from_json, to_json
from bench.report import render as render_table
from bench.stats import percentile


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0.5) == 2.5
    assert percentile(values, 0.9) == pytest.approx(3.7)
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 4.0
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile(values, 99)


def _table(mode: str, p50: float, cpu: float, router: float) -> Table:
    table = Table(name="unary", title="1. Non-streaming, concurrency 1", params={"requests": 10})
    table.add(mode, Row("latency_p50", "latency p50", "ms", direct=2.0, gateway={mode: p50}, delta="diff"))
    table.add(mode, Row("cpu_per_request", "suite CPU per request", "ms", gateway={mode: cpu}))
    table.add(mode, Row("cpu_per_request.router", "router", "ms", gateway={mode: router}, indent=1))
    return table


def test_rows_of_two_modes_merge_and_render_beside_the_direct_figure() -> None:
    table = _table("log on", 7.5, 5.6, 1.7)
    for row in _table("log off", 6.0, 4.0, 1.2).rows:
        table.add("log off", row)
    assert [r.key for r in table.rows] == ["latency_p50", "cpu_per_request", "cpu_per_request.router"]
    assert table.rows[0].gateway == {"log on": 7.5, "log off": 6.0}
    text = render_table(table, ["log on", "log off"])
    header, p50 = text.splitlines()[1], text.splitlines()[2]
    assert header.split() == [
        "direct",
        "gateway",
        "(log",
        "on)",
        "vs",
        "direct",
        "gateway",
        "(log",
        "off)",
        "vs",
        "direct",
    ]
    assert p50.split() == ["latency", "p50", "(ms)", "2.00", "7.50", "+5.50", "6.00", "+4.00"]
    assert "  router (ms)" in text


def test_figures_are_formatted_to_about_three_digits() -> None:
    assert [fmt(v) for v in (1234.5, 56.78, 5.678, 0.05678)] == ["1234", "56.8", "5.68", "0.057"]
    assert fmt(3.0, "count") == "3"
    assert fmt(float("nan")) == fmt(None) == "-"


def test_json_round_trips_with_nan_as_null() -> None:
    table = _table("log on", 7.5, float("nan"), 1.7)
    data = json.loads(json.dumps(to_json({"label": "x"}, ["log on"], [table])))
    assert data["tables"][0]["rows"][1]["gateway"] == {"log on": None}
    meta, modes, tables = from_json(data)
    assert meta == {"label": "x"} and modes == ["log on"]
    assert tables[0].rows[0] == table.rows[0]


def test_compare_lists_every_figure_with_its_change_and_what_one_run_lacks() -> None:
    before = _table("log on", 8.0, 5.6, 1.7)
    after = _table("log on", 4.0, 1.4, 0.5)
    after.add("log on", Row("latency_p99", "latency p99", "ms", direct=3.0, gateway={"log on": 9.0}, delta="diff"))
    lines = compare([before], [after])
    by_figure = {(line[1].strip(), line[2]): line[3:] for line in lines}
    assert by_figure[("latency p50 (ms)", "direct")] == ["2.00", "2.00", "+0%"]
    assert by_figure[("latency p50 (ms)", "gateway (log on)")] == ["8.00", "4.00", "-50%"]
    assert by_figure[("suite CPU per request (ms)", "gateway (log on)")] == ["5.60", "1.40", "-75%"]
    assert by_figure[("latency p99 (ms)", "gateway (log on)")] == ["(absent)", "9.00", ""]
    text = render({"label": "main"}, {"label": "bench"}, lines)
    assert text.splitlines()[0].startswith("before: main") and "1. Non-streaming, concurrency 1" in text
