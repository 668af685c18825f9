"""The four scenarios of ``make bench``, each against a direct call to the same fake upstream.

Each scenario runs a bounded series directly (once, the first time) and through the gateway (once
per mode), sampling CPU from /proc around the gateway series only, and adds its rows to its table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from bench import client, procstat
from bench.meter import CpuWindow, Meter
from bench.report import Delta, Row, Table
from bench.stats import percentile

SERVICE_ORDER = ("edge", "router", "providers", "ratelimit", "auth", "metering")
"""The split's order: the request's path first, so columns read alike run after run."""


@dataclass(frozen=True)
class Settings:
    """Counts, concurrency and bounds of every series."""

    requests: int = 300
    """Non-streamed requests at concurrency 1 (each way)."""
    saturate_requests: int = 1500
    concurrency: int = 32
    streams: int = 200
    """Unpaced streams at concurrency 1 (each way)."""
    stream_events: int = 23
    paced_streams: int = 200
    paced_concurrency: int = 100
    pace_ms: int = 20
    paced_events: int = 50
    max_seconds: float = 10.0
    """Every series stops after this long, whatever its count (the figures say how many ran)."""
    soak_requests: int = 100_000
    """The opt-in ``soak`` scenario: this many non-streamed requests, PSS before and after."""
    soak_max_seconds: float = 900.0


@dataclass
class Context:
    """What a scenario needs: the client session, both targets, the meter and the settings."""

    session: aiohttp.ClientSession
    direct: client.Target
    gateway: client.Target
    meter: Meter
    settings: Settings
    mode: str
    measure_direct: bool
    """False after the first mode: the direct baseline does not change with the gateway's settings."""


def _ms(seconds: float) -> float:
    return seconds * 1000


class _Adder:
    """Adds rows to a table for the context's mode (and direct values only when measured)."""

    def __init__(self, table: Table, ctx: Context) -> None:
        self.table, self.ctx = table, ctx

    def __call__(
        self,
        key: str,
        label: str,
        unit: str,
        direct: float | None,
        gateway: float | None,
        delta: Delta = "",
        indent: int = 0,
    ) -> None:
        row = Row(key=key, label=label, unit=unit, delta=delta, indent=indent)
        if self.ctx.measure_direct:
            row.direct = direct
        if gateway is not None:
            row.gateway = {self.ctx.mode: gateway}
        self.table.add(self.ctx.mode, row)

    def latency(self, key: str, label: str, direct: list[float] | None, gateway: list[float], q: float) -> None:
        """A percentile of two series of seconds, in ms, with the gateway's addition."""
        self(
            key,
            label,
            "ms",
            _ms(percentile(direct, q)) if direct is not None else None,
            _ms(percentile(gateway, q)),
            "diff",
        )

    def cpu_split(self, key: str, label: str, window: CpuWindow, per: float) -> None:
        """CPU ms per unit of work: the suite's total, then each service."""
        self(key, label, "ms", None, _ms(window.suite) / per if per else float("nan"))
        for name in sorted(window.services, key=lambda n: SERVICE_ORDER.index(n) if n in SERVICE_ORDER else 99):
            self(f"{key}.{name}", name, "ms", None, _ms(window.services[name]) / per if per else float("nan"), indent=1)

    def side_cpu(self, key: str, what: str, direct: CpuWindow | None, dn: float, window: CpuWindow, gn: float) -> None:
        """The bench client's and the fake upstream's own CPU (not the gateway's), per unit of work."""

        def per(value: float, n: float) -> float:
            return _ms(value) / n if n else float("nan")

        self(
            f"client_cpu_per_{key}",
            f"bench client CPU per {what}",
            "ms",
            per(direct.client, dn) if direct else None,
            per(window.client, gn),
        )
        self(
            f"upstream_cpu_per_{key}",
            f"fake upstream CPU per {what}",
            "ms",
            per(direct.upstream, dn) if direct else None,
            per(window.upstream, gn),
        )

    def outcome(self, direct: client.Series | None, gateway: client.Series, count: int) -> None:
        """How much of the series ran, how long it took, and what failed (a figure with failures
        is suspect: the first failure is in the notes)."""
        self("done", "completed", "count", len(direct.samples) if direct else None, len(gateway.samples))
        self("elapsed", "series time", "s", direct.elapsed_s if direct else None, gateway.elapsed_s)
        self("errors", "failed", "count", direct.errors if direct else None, gateway.errors)
        for name, series in (("direct", direct), (f"gateway ({self.ctx.mode})", gateway)):
            if series is None:
                continue
            if series.errors:
                self.table.notes.append(f"{name}: {series.errors} failed, first: {series.first_error}")
            if len(series.samples) + series.errors < count:
                self.table.notes.append(
                    f"{name}: stopped by --max-seconds {self.ctx.settings.max_seconds:g} after "
                    f"{len(series.samples) + series.errors} of {count}"
                )


async def _measured(
    ctx: Context, make: Callable[[client.Target], client.Call], count: int, concurrency: int, stagger_s: float = 0.0
) -> tuple[client.Series | None, CpuWindow | None, client.Series, CpuWindow]:
    """The series directly (when measured) and through the gateway, each in its own CPU window."""
    direct = direct_cpu = None
    if ctx.measure_direct:
        before = ctx.meter.cpu()
        direct = await client.run(make(ctx.direct), count, concurrency, ctx.settings.max_seconds, stagger_s)
        direct_cpu = ctx.meter.window(before)
    before = ctx.meter.cpu()
    gateway = await client.run(make(ctx.gateway), count, concurrency, ctx.settings.max_seconds, stagger_s)
    await quiesce(ctx.meter)
    return direct, direct_cpu, gateway, ctx.meter.window(before)


async def quiesce(meter: Meter, step_s: float = 0.2, max_s: float = 2.0) -> None:
    """Wait until the suite stops spending CPU on the series just finished (usage batched to
    metering, settlements) so the window charges it to the series: until a ``step_s`` passes with
    at most one clock tick spent, or ``max_s``."""
    deadline = time.perf_counter() + max_s
    last = meter.cpu().suite
    while time.perf_counter() < deadline:
        await asyncio.sleep(step_s)
        now = meter.cpu().suite
        if now - last <= 1.5 / procstat.CLOCK_TICKS:
            return
        last = now


async def unary_c1(ctx: Context, table: Table) -> None:
    """1. Non-streaming at concurrency 1: latency percentiles, added p50, CPU per request."""
    s = ctx.settings
    table.params.update(requests=s.requests, concurrency=1)
    direct, dcpu, gw, cpu = await _measured(ctx, lambda t: client.unary(ctx.session, t, "bench"), s.requests, 1)
    add = _Adder(table, ctx)
    dl = direct.latencies if direct else None
    for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        add.latency(f"latency_{name}", f"latency {name}", dl, gw.latencies, q)
    done = len(gw.samples)
    add.cpu_split("cpu_per_request", "suite CPU per request", cpu, done)
    add.side_cpu("request", "request", dcpu, len(direct.samples) if direct else 0, cpu, done)
    add.outcome(direct, gw, s.requests)


async def saturated(ctx: Context, table: Table) -> None:
    """2. Non-streaming saturated: requests/s and CPU per request with the per-service split."""
    s = ctx.settings
    table.params.update(requests=s.saturate_requests, concurrency=s.concurrency)
    direct, dcpu, gw, cpu = await _measured(
        ctx, lambda t: client.unary(ctx.session, t, "bench"), s.saturate_requests, s.concurrency
    )
    add = _Adder(table, ctx)
    done = len(gw.samples)
    add(
        "throughput",
        "throughput",
        "req/s",
        len(direct.samples) / direct.elapsed_s if direct else None,
        done / gw.elapsed_s,
        "ratio",
    )
    dl = direct.latencies if direct else None
    add.latency("latency_p50", "latency p50 under load", dl, gw.latencies, 0.5)
    add.latency("latency_p99", "latency p99 under load", dl, gw.latencies, 0.99)
    add.cpu_split("cpu_per_request", "suite CPU per request", cpu, done)
    add("suite_cores", "suite CPU busy", "cores", None, cpu.suite / cpu.wall_s)
    add.side_cpu("request", "request", dcpu, len(direct.samples) if direct else 0, cpu, done)
    add.outcome(direct, gw, s.saturate_requests)


async def stream_0ms(ctx: Context, table: Table) -> None:
    """3. Streaming at 0 ms pacing: time to first chunk, CPU per stream and per relayed event."""
    s = ctx.settings
    model = f"bench-e{s.stream_events}-p0"
    table.params.update(streams=s.streams, concurrency=1, upstream_events=s.stream_events, pacing_ms=0)
    direct, dcpu, gw, cpu = await _measured(ctx, lambda t: client.stream(ctx.session, t, model), s.streams, 1)
    add = _Adder(table, ctx)
    df = direct.first_events if direct else None
    add.latency("ttfc_p50", "time to first chunk p50", df, gw.first_events, 0.5)
    add.latency("ttfc_p99", "time to first chunk p99", df, gw.first_events, 0.99)
    add.latency("stream_p50", "whole stream p50", direct.latencies if direct else None, gw.latencies, 0.5)
    done = len(gw.samples)
    add(
        "events_per_stream",
        "events received per stream",
        "count",
        direct.events / len(direct.samples) if direct and direct.samples else None,
        gw.events / done if done else float("nan"),
    )
    add.cpu_split("cpu_per_stream", "suite CPU per stream", cpu, done)
    add.cpu_split("cpu_per_event", "suite CPU per relayed event", cpu, gw.events)
    add.side_cpu("stream", "stream", dcpu, len(direct.samples) if direct else 0, cpu, done)
    add.outcome(direct, gw, s.streams)


async def stream_paced(ctx: Context, table: Table) -> None:
    """4. Streaming paced (one event every ``pace_ms``), many concurrent streams: CPU per relayed
    event with the split, added time to first chunk."""
    s = ctx.settings
    model = f"bench-e{s.paced_events}-p{s.pace_ms}"
    table.params.update(
        streams=s.paced_streams, concurrency=s.paced_concurrency, upstream_events=s.paced_events, pacing_ms=s.pace_ms
    )
    # The streams start spread over one stream's length, as they would arrive, not all at once.
    stagger = (s.paced_events - 1) * s.pace_ms / 1000 / s.paced_concurrency
    direct, dcpu, gw, cpu = await _measured(
        ctx, lambda t: client.stream(ctx.session, t, model), s.paced_streams, s.paced_concurrency, stagger
    )
    add = _Adder(table, ctx)
    df = direct.first_events if direct else None
    add.latency("ttfc_p50", "time to first chunk p50", df, gw.first_events, 0.5)
    add.latency("ttfc_p99", "time to first chunk p99", df, gw.first_events, 0.99)
    add.latency("stream_p50", "whole stream p50", direct.latencies if direct else None, gw.latencies, 0.5)
    add(
        "event_rate",
        "events relayed",
        "events/s",
        direct.events / direct.elapsed_s if direct else None,
        gw.events / gw.elapsed_s,
        "ratio",
    )
    add.cpu_split("cpu_per_event", "suite CPU per relayed event", cpu, gw.events)
    add("cpu_per_stream", "suite CPU per stream", "ms", None, _ms(cpu.suite) / len(gw.samples) if gw.samples else None)
    add("suite_cores", "suite CPU busy", "cores", None, cpu.suite / cpu.wall_s)
    add.side_cpu("event", "event", dcpu, direct.events if direct else 0, cpu, gw.events)
    paced_s = (s.paced_events - 1) * s.pace_ms / 1000
    took = percentile(gw.latencies, 0.5)
    if took > paced_s * 1.25 + 0.05:
        table.notes.append(
            f"gateway ({ctx.mode}): streams took {_ms(took):.0f} ms at p50 for {_ms(paced_s):.0f} ms of pacing: "
            "the suite could not keep up, so its times include queueing"
        )
    add.outcome(direct, gw, s.paced_streams)


async def rest(ctx: Context, table: Table, seconds: float) -> None:
    """The suite at rest (after warm-up, before load): CPU per second idle, then memory."""
    before = ctx.meter.cpu()
    await asyncio.sleep(seconds)  # measuring idleness is waiting: nothing to poll for
    window = ctx.meter.window(before)
    add = _Adder(table, ctx)
    add("idle_cpu", "suite CPU at rest", "ms/s", None, _ms(window.suite) / window.wall_s)
    memory(ctx, table, "pss_rest", "PSS at rest")


def memory(ctx: Context, table: Table, key: str, label: str, peak: bool = False) -> None:
    """PSS of each suite process tree, summed, and (after the load) the peak RSS too."""
    add = _Adder(table, ctx)
    figures = ctx.meter.memory()
    ordered = sorted(figures, key=lambda n: SERVICE_ORDER.index(n) if n in SERVICE_ORDER else 99)
    add(key, f"{label}, all processes", "MB", None, sum(m.pss_kb for m in figures.values()) / 1024)
    for name in ordered:
        add(f"{key}.{name}", name, "MB", None, figures[name].pss_kb / 1024, indent=1)
    if peak:
        # RSS counts a page each process shares in full in each: forked from the fork server, the
        # sum overstates what the suite holds (PSS splits them), so read it per process.
        add("rss_peak", "peak RSS (VmHWM), summed", "MB", None, sum(m.rss_peak_kb for m in figures.values()) / 1024)
        for name in ordered:
            add(f"rss_peak.{name}", name, "MB", None, figures[name].rss_peak_kb / 1024, indent=1)


async def soak(ctx: Context, table: Table) -> None:
    """Opt-in: many non-streamed requests through the gateway only; PSS before and after, per service."""
    s = ctx.settings
    table.params.update(requests=s.soak_requests, concurrency=s.concurrency)
    memory(ctx, table, "pss_before", "PSS before")
    before = {name: m.pss_kb for name, m in ctx.meter.memory().items()}
    call = client.unary(ctx.session, ctx.gateway, "bench")
    series = await client.run(call, s.soak_requests, s.concurrency, s.soak_max_seconds)
    await quiesce(ctx.meter)
    after = ctx.meter.memory()
    add = _Adder(table, ctx)
    add("done", "completed", "count", None, len(series.samples))
    add("throughput", "throughput", "req/s", None, len(series.samples) / series.elapsed_s)
    add(
        "pss_growth",
        "PSS growth, all processes",
        "MB",
        None,
        sum(m.pss_kb - before[n] for n, m in after.items()) / 1024,
    )
    for name in sorted(after, key=lambda n: SERVICE_ORDER.index(n) if n in SERVICE_ORDER else 99):
        add(f"pss_growth.{name}", name, "MB", None, (after[name].pss_kb - before[name]) / 1024, indent=1)
    add("errors", "failed", "count", None, series.errors)
    if series.errors:
        table.notes.append(f"gateway ({ctx.mode}): {series.errors} failed, first: {series.first_error}")


SCENARIOS = {
    "unary": ("1. Non-streaming, concurrency 1", unary_c1),
    "saturated": ("2. Non-streaming, saturated", saturated),
    "stream": ("3. Streaming, 0 ms pacing", stream_0ms),
    "paced": ("4. Streaming, paced", stream_paced),
    "soak": ("5. Soak: memory growth over many requests (opt-in)", soak),
}
DEFAULT_SCENARIOS = ("unary", "saturated", "stream", "paced")
