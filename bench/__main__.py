"""``make bench``: the gateway's added latency and its throughput, against a direct call to the same upstream.

It starts a fast fake OpenAI upstream and the whole suite as processes on loopback, then makes
the same requests directly and through the edge:
- non-streaming latency at concurrency 1 (p50, p99),
- non-streaming throughput at concurrency 32,
- streaming time to first chunk (p50, p99),
- streaming relay cost per chunk (a long stream, gateway time minus direct time, per chunk),
- CPU time per non-streamed request during the throughput run, summed over every process of the
  suite (read from /proc, children included), with the split per service.
It prints the differences. It is a measurement, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from suite.supervisor import Suite, free_port

BODY = {"messages": [{"role": "user", "content": "Say hello in five words."}]}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _latencies(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    result = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        result.append(time.perf_counter() - start)
    return result


async def _throughput(call: Callable[[], Awaitable[None]], total: int, concurrency: int) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its waited-for children, from /proc (Linux only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: utime, stime, cutime, cstime are fields 14-17 of stat(5).
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _suite_cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: _cpu_seconds(pid) for name, pid in pids.items()}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


async def _measure(direct_url: str, gateway_url: str, key: str, args: argparse.Namespace, pids: dict[str, int]) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        targets = {
            "direct": (f"{direct_url}/chat/completions", {}, "bench"),
            "gateway": (f"{gateway_url}/v1/chat/completions", {"Authorization": f"Bearer {key}"}, "fake:bench"),
        }

        def unary(name: str) -> Callable[[], Awaitable[None]]:
            url, headers, model = targets[name]

            async def call() -> None:
                response = await client.post(url, headers=headers, json={**BODY, "model": model})
                response.raise_for_status()

            return call

        def first_chunk(name: str, model_suffix: str = "") -> Callable[[], Awaitable[None]]:
            url, headers, model = targets[name]

            async def call() -> None:
                body = {**BODY, "model": model + model_suffix, "stream": True}
                async with client.stream("POST", url, headers=headers, json=body) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            break

            return call

        def whole_stream(name: str) -> Callable[[], Awaitable[None]]:
            url, headers, model = targets[name]

            async def call() -> None:
                body = {**BODY, "model": model, "stream": True}
                async with client.stream("POST", url, headers=headers, json=body) as response:
                    response.raise_for_status()
                    async for _ in response.aiter_bytes():
                        pass

            return call

        for name in targets:  # warm up connections and caches
            for _ in range(20):
                await unary(name)()
                await first_chunk(name)()

        results: dict[str, dict[str, float]] = {}
        cpu: dict[str, float] = {}
        for name in targets:
            lat = await _latencies(unary(name), args.requests)
            ttfc = await _latencies(first_chunk(name), args.requests)
            before = _suite_cpu(pids) if name == "gateway" else {}
            rps = await _throughput(unary(name), args.throughput_requests, args.concurrency)
            if name == "gateway":
                after = _suite_cpu(pids)
                cpu = {p: (after[p] - before[p]) / args.throughput_requests for p in pids}
            streams = await _latencies(whole_stream(name), max(20, args.requests // 5))
            results[name] = {
                "p50": statistics.median(lat),
                "p99": _percentile(lat, 0.99),
                "rps": rps,
                "ttfc50": statistics.median(ttfc),
                "ttfc99": _percentile(ttfc, 0.99),
                "stream50": statistics.median(streams),
            }
    d, g = results["direct"], results["gateway"]
    chunks = args.stream_chunks + 3  # role chunk, content chunks, finish chunk, usage chunk
    print(f"\nLLM Gateway benchmark (loopback, {os.cpu_count()} cores; the same fake OpenAI upstream both ways)")
    print(
        f"  requests per latency series: {args.requests}; throughput: {args.throughput_requests} "
        f"at concurrency {args.concurrency}; long stream: {chunks} chunks\n"
    )
    print(f"  {'':34}{'direct':>12}{'gateway':>12}{'added':>12}")
    for label, key in (
        ("non-stream latency p50", "p50"),
        ("non-stream latency p99", "p99"),
        ("stream time to first chunk p50", "ttfc50"),
        ("stream time to first chunk p99", "ttfc99"),
        (f"stream of {chunks} chunks, p50", "stream50"),
    ):
        print(f"  {label:34}{_ms(d[key]):>12}{_ms(g[key]):>12}{_ms(g[key] - d[key]):>12}")
    print(
        f"  {'throughput (req/s), concurrency ' + str(args.concurrency):34}{d['rps']:>12.0f}{g['rps']:>12.0f}"
        f"{'ratio ' + format(g['rps'] / d['rps'], '.2f'):>12}"
    )
    relay = (g["stream50"] - d["stream50"] - (g["ttfc50"] - d["ttfc50"])) / chunks
    print(f"  {'stream relay cost per chunk':34}{'':>12}{'':>12}{_ms(relay):>12}")
    split = ", ".join(f"{name} {seconds * 1000:.2f}" for name, seconds in sorted(cpu.items(), key=lambda i: -i[1]))
    print(f"  {'CPU per request, all processes':34}{'':>12}{_ms(sum(cpu.values())):>12}")
    print(f"    per service (ms): {split}\n")


def _wait_for_upstream(url: str, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the fake upstream exited")
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("the fake upstream did not start")


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per latency series")
    parser.add_argument("--throughput-requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream-chunks", type=int, default=200)
    parser.add_argument(
        "--plaintext-internal",
        action="store_true",
        help="run the internal gRPC hops without mutual TLS (GATEWAY_INTERNAL_TLS=off), to see what TLS costs",
    )
    args = parser.parse_args()

    # The upstream gets its own process: in this one it would share the GIL with the client and
    # make the direct baseline (and so every ratio) look worse than it is.
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_upstream", str(upstream_port), str(args.stream_chunks)]
    )
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    _wait_for_upstream(upstream_url, upstream)
    data = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    config = data / "gateway.yaml"
    config.write_text(
        f"providers:\n  fake:\n    type: openai_compatible\n    base_url: {upstream_url}\n"
        "log_level: WARNING\nlimits:\n  requests_per_minute: 100000000\n  tokens_per_minute: 100000000000\n"
    )
    key = f"gw-{secrets.token_urlsafe(32)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_CONFIG": str(config), "GATEWAY_TENANT_KEYS": f"bench:{key}"})
    if args.plaintext_internal:
        env["GATEWAY_INTERNAL_TLS"] = "off"
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data, ports=ports, env=env)
    print("starting the suite and a fake upstream on loopback…", flush=True)
    suite.start()
    try:
        pids = {name: process.pid for name, process in suite.processes.items()}
        asyncio.run(_measure(upstream_url, suite.edge_url, key, args, pids))
    finally:
        suite.stop()
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
