"""``make bench``: what the gateway adds to a call, and what it costs, against a direct call to the same upstream.

It starts a fast fake OpenAI upstream (its own process) and the whole suite as processes on
loopback (embedded defaults, internal mutual TLS), then makes the same requests directly and
through the edge:
  1. non-streaming at concurrency 1: latency p50/p90/p99 and what the gateway adds;
  2. non-streaming saturated (concurrency 32): requests/s, CPU per request;
  3. streaming at 0 ms pacing, 23 events: time to first chunk, CPU per stream and per relayed event;
  4. streaming paced (an event every 20 ms), 100 concurrent streams: CPU per relayed event, time to
     first chunk.
CPU is user + system time from /proc of every suite process and its children (10 ms ticks), sampled
around each gateway series only, with the split per service; the bench client's and the fake
upstream's own CPU are shown apart and never counted for the gateway. Memory: PSS of each process
at rest (after warm-up, before load) and after the load, and peak RSS (VmHWM; it counts the pages the
processes share, forked from the fork server, in full in each).

Pinning: by default, on a machine with two or more cores, every suite process runs on the first
core and the fake upstream and this client on the others (``--cpu N`` picks the suite's core,
``--cpu none`` pins nothing). The request log: one suite runs with it on (log level INFO, the
production default), another with it off (WARNING), both started at once and measured in turn,
scenario by scenario, so every table shows what it costs (``--request-log on|off|both``).

Before/after: the same bench, on two checkouts' code (``--checkout`` runs the suite from another
checkout, e.g. one whose own bench is older), each with ``--json``, then compare:
    make bench BENCH_ARGS="--checkout /path/to/before --json /tmp/before.json"
    make bench BENCH_ARGS="--checkout /path/to/after --json /tmp/after.json"
    python -m bench.compare /tmp/before.json /tmp/after.json
(or ``make bench BENCH_ARGS="--json ..."`` in each checkout, once both have this bench).
Series stop at ``--max-seconds`` each whatever their count; the tables say how many ran.
It is a measurement, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench import client, report
from bench.meter import CLIENT, UPSTREAM, Meter
from bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS, Context, Settings, memory, rest
from suite.supervisor import Suite, free_port

LOG_LEVELS = {"log on": "INFO", "log off": "WARNING"}
"""Request log on is the production default (INFO: one line per request); off is WARNING."""
FORK_SERVER = "fork server"
"""The fork server's row in the CPU and memory splits (its own process only, not its children)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (every count has a default that keeps the full run under ~3 minutes)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = Settings()
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS)} (default: {','.join(DEFAULT_SCENARIOS)}; memory is "
        "always reported; soak, 100k requests by default, is opt-in)",
    )
    parser.add_argument(
        "--cpu", default="auto", help="the suite's core: a number, 'auto' (the first, given 2+ cores), 'none'"
    )
    parser.add_argument(
        "--request-log",
        choices=("on", "off", "both"),
        default="both",
        help="run the suite with the request log on (INFO), off (WARNING), or both to see its cost (default)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file (for bench.compare)")
    parser.add_argument("--label", help="a name for this run in the JSON (default: the checkout's git commit)")
    parser.add_argument(
        "--checkout",
        type=lambda value: Path(value).resolve(),
        help="run the suite from another checkout's code (its services and gen/), measured by this bench",
    )
    parser.add_argument(
        "--plaintext-internal",
        action="store_true",
        help="run the internal gRPC hops without mutual TLS (GATEWAY_INTERNAL_TLS=off), to see what TLS costs",
    )
    parser.add_argument(
        "--no-fork-server",
        action="store_true",
        help="start each process with its own `python -m` instead of forking it from the suite's fork server"
        " (which shares the libraries' memory), to see what sharing saves",
    )
    for f in fields(Settings):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name)
        )
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    return args


def choose_cpus(arg: str, available: set[int]) -> tuple[set[int], set[int]] | None:
    """(the suite's cores, everyone else's), or None to pin nothing."""
    if arg == "none" or (arg == "auto" and len(available) < 2):
        return None
    core = min(available) if arg == "auto" else int(arg)
    if core not in available or len(available) < 2:
        raise SystemExit(f"bench: --cpu {arg}: needs a core of {sorted(available)} and another one for the client")
    return {core}, available - {core}


def _wait_for_upstream(url: str, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the fake upstream exited")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise RuntimeError("the fake upstream did not start")


def _git_commit(checkout: Path | None) -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            cwd=checkout,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


async def _warm_up(ctx: Context) -> None:
    # Connections, caches, and the first-call paths of every process (and both stream shapes).
    for target in (ctx.gateway, ctx.direct) if ctx.measure_direct else (ctx.gateway,):
        await client.run(client.unary(ctx.session, target, "bench"), 50, 8, 10)
        await client.run(client.stream(ctx.session, target, f"bench-e{ctx.settings.stream_events}-p0"), 10, 4, 10)


async def _measure(
    args: argparse.Namespace, meters: dict[str, Meter], direct: client.Target, gateways: dict[str, client.Target],
    tables: dict[str, report.Table],
) -> None:  # fmt: skip
    """Every scenario on every mode's suite in turn (so drift in the machine's load spreads over
    the modes alike), the direct baseline once, with the first mode."""
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    async with client.session() as session:
        contexts = [
            Context(session, direct, gateways[mode], meter, settings, mode, measure_direct=i == 0)
            for i, (mode, meter) in enumerate(meters.items())
        ]
        for ctx in contexts:
            await _warm_up(ctx)
        for ctx in contexts:
            await rest(ctx, tables["memory"], 2.0)
        if len(contexts) > 1:
            tables["memory"].notes.append(
                "PSS splits a page among every process that maps it, the other suite's too: with both suites"
                " running, each one's PSS is lower than alone (run --request-log on or off for one suite's own)"
            )
        for name in args.scenarios.split(","):
            for ctx in contexts:
                print(f"  {ctx.mode}: {SCENARIOS[name][0]}…", file=sys.stderr, flush=True)
                await SCENARIOS[name][1](ctx, tables[name])
        for ctx in contexts:
            memory(ctx, tables["memory"], "pss_load", "PSS after the load", peak=True)


def _suite(data: Path, upstream_url: str, key: str, log_level: str, args: argparse.Namespace) -> Suite:
    data.mkdir(parents=True)
    config = data / "gateway.yaml"
    config.write_text(
        f"providers:\n  fake:\n    type: openai_compatible\n    base_url: {upstream_url}\n"
        f"log_level: {log_level}\n"
        "limits:\n  requests_per_minute: 100000000\n  tokens_per_minute: 100000000000\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_CONFIG": str(config), "GATEWAY_TENANT_KEYS": f"bench:{key}"})
    if args.plaintext_internal:
        env["GATEWAY_INTERNAL_TLS"] = "off"
    if args.checkout:
        # The suite's processes import the other checkout's code (PYTHONPATH comes before the
        # venv's editable install); this process keeps its own bench and launcher.
        env["PYTHONPATH"] = f"{args.checkout}{os.pathsep}{args.checkout / 'gen'}"
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    return Suite(data_dir=data, ports=ports, env=env, fork_server=not args.no_fork_server)


def _header(meta: dict[str, Any]) -> str:
    lines = [
        f"LLM Gateway benchmark — {meta['label']} — {meta['started']}",
        f"  machine: {meta['cores']} cores ({meta['cpu_model']}), Python {meta['python']}",
        f"  load average: {meta['loadavg']} at start, {meta['loadavg_end']} at the end (other work on the machine",
        "       adds noise: compare runs made under similar load)",
        f"  pinning: {meta['pinning']}",
        f"  suite: {meta['checkout']}, embedded defaults, internal TLS {meta['internal_tls']}, {meta['launch']}",
        "  request log per column: log on = level INFO, the production default (the router's JSON line per",
        "       request, into the suite's log files); log off = WARNING. One suite per column, all running,",
        "       measured in turn scenario by scenario (an idle suite spends ~10-25 ms/s of CPU, see 'at rest')",
        "  CPU: user+system from /proc (10 ms ticks), every suite process and its children, gateway series only;",
        "       the bench client's and the fake upstream's own CPU are shown apart, never counted for the gateway",
    ]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print its tables, and write the JSON if asked."""
    args = parse_args(argv)
    cpus = choose_cpus(args.cpu, os.sched_getaffinity(0))
    modes = {"on": ["log on"], "off": ["log off"], "both": ["log on", "log off"]}[args.request_log]
    root = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    key = f"gw-{secrets.token_urlsafe(32)}"
    tables = {
        name: report.Table(name=name, title=title)
        for name, (title, _) in SCENARIOS.items()
        if name in args.scenarios.split(",")
    }
    tables["memory"] = report.Table(name="memory", title="Memory and idle CPU of the suite")
    meta: dict[str, Any] = {
        "label": args.label or _git_commit(args.checkout),
        "checkout": str(args.checkout or Path.cwd()),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "internal_tls": "off" if args.plaintext_internal else "on (mutual)",
        "launch": "each process its own python -m" if args.no_fork_server else "forked from the fork server",
        "pinning": (
            "none" if cpus is None else f"suite on core {sorted(cpus[0])}, upstream and client on {sorted(cpus[1])}"
        )
        + f" (--cpu {args.cpu})",
        "argv": sys.argv[1:] if argv is None else argv,
    }
    # The upstream gets its own process: in this one it would share the GIL with the client and
    # make the direct baseline (and so every ratio) look worse than it is.
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "bench.fake_upstream", str(upstream_port)])
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    direct = client.Target("direct", f"{upstream_url}/chat/completions", {}, "")
    suites: dict[str, Suite] = {}
    try:
        _wait_for_upstream(upstream_url, upstream)
        meters, gateways = {}, {}
        for mode in modes:
            suites[mode] = _suite(root / mode.replace(" ", "-"), upstream_url, key, LOG_LEVELS[mode], args)
        print(f"starting {len(suites)} suite(s) ({', '.join(modes)})…", file=sys.stderr, flush=True)
        started = time.perf_counter()
        # Side by side: each start mostly waits for its processes' health, so together they take
        # the time of one.
        with concurrent.futures.ThreadPoolExecutor(len(suites)) as pool:
            for future in [pool.submit(suite.start) for suite in suites.values()]:
                future.result()
        print(f"  started in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        for mode, suite in suites.items():
            processes = {name: p.pid for name, p in suite.processes.items()}
            if suite.forks is not None:
                processes[FORK_SERVER] = suite.forks.pid
            meters[mode] = Meter(processes, upstream.pid)
            if cpus is not None:
                meters[mode].pin(*cpus)
            meta.setdefault("affinity", {})[mode] = meters[mode].affinity()
            gateways[mode] = client.Target(
                "gateway", f"{suite.edge_url}/v1/chat/completions", {"Authorization": f"Bearer {key}"}, "fake:"
            )
        asyncio.run(_measure(args, meters, direct, gateways, tables))
    finally:
        for suite in suites.values():
            suite.stop()
        upstream.terminate()
        upstream.wait(timeout=10)
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    shutil.rmtree(root, ignore_errors=True)  # kept when the run failed: the suite's logs are in it
    print("\n" + _header(meta) + "\n")
    for table in tables.values():
        print(report.render(table, modes) + "\n")
    affinity = meta.get("affinity", {}).get(modes[0], {})
    print("  allowed CPUs (from /proc): " + ", ".join(f"{n} {c}" for n, c in affinity.items()))
    print(f"  side processes: '{CLIENT}' and '{UPSTREAM}' rows are not part of any suite figure")
    if args.json:
        args.json.write_text(json.dumps(report.to_json(meta, modes, list(tables.values())), indent=2) + "\n")
        print(f"  figures written to {args.json}")


if __name__ == "__main__":
    main()
