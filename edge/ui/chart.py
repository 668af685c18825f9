"""Usage over time as a stacked bar chart: time windows in, SVG geometry out.

Pure: no I/O and no protobuf. The template draws the rectangles as inline SVG, so the chart needs
no script and no chart library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Name → (bucket width, bucket count, label format).
RANGES: Mapping[str, tuple[timedelta, int, str]] = {
    "hour": (timedelta(minutes=5), 12, "%H:%M"),
    "day": (timedelta(hours=1), 24, "%H:00"),
    "week": (timedelta(days=1), 7, "%a %d"),
}
DEFAULT_RANGE = "hour"
METRICS = ("tokens", "cost_usd", "requests")

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 240, 64, 28, 12
# Colour-blind-safe palette (Okabe–Ito); series past its length reuse it.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def windows(range_name: str, now: datetime) -> list[tuple[datetime, datetime]]:
    """The ``[start, end)`` buckets of ``range_name`` ending with the one that holds ``now``."""
    width, count, _ = RANGES[range_name]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    end = epoch + ((now - epoch) // width + 1) * width
    return [(end - (count - i) * width, end - (count - i - 1) * width) for i in range(count)]


@dataclass(frozen=True)
class Bar:
    """One series' segment of one bucket."""

    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Chart:
    """What the template draws."""

    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    axis_max: str
    legend: list[tuple[str, str]]
    empty: bool


def build(
    range_name: str,
    buckets: Sequence[tuple[datetime, datetime]],
    values: Sequence[Mapping[str, float]],
    metric_label: str,
) -> Chart:
    """A stacked bar per bucket, one segment per series (a key or a model), heights to scale."""
    fmt = RANGES[range_name][2]
    series = sorted({name for bucket in values for name in bucket})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    peak = max((sum(bucket.values()) for bucket in values), default=0.0)
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(buckets), 1)
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for i, ((start, _), bucket) in enumerate(zip(buckets, values, strict=True)):
        x = LEFT + i * slot + slot * 0.1
        base: float = HEIGHT - BOTTOM
        for name in series:
            value = bucket.get(name, 0.0)
            if value <= 0 or peak <= 0:
                continue
            height = value / peak * plot_h
            base -= height
            bars.append(Bar(x, base, slot * 0.8, height, colors[name], f"{name}: {_number(value)} {metric_label}"))
        labels.append((LEFT + i * slot + slot / 2, start.strftime(fmt)))
    return Chart(WIDTH, HEIGHT, bars, labels, _number(peak), [(n, colors[n]) for n in series], peak <= 0)


def _number(value: float) -> str:
    return f"{value:,.6f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"
