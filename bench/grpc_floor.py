"""``python -m bench.grpc_floor``: what one gRPC message costs in CPU on this machine, with nothing else.

The gateway's request path has two gRPC hops (edge → router → providers); whatever the services do,
each hop costs at least what grpc.aio spends on an empty call. This measures that floor: a client
process and a server process on loopback (uvloop, as the services run; plaintext, or mutual TLS as
the suite runs with ``--tls``), the standard health service as the server (no work of ours), and
user + system CPU of each side per call:
- unary: ``Health.Check`` from one caller (its round trip's p50 is the latency a hop adds), and from
  8 concurrent callers;
- streamed: ``Health.Watch`` answering a burst of messages, and the same paced (one message every
  ``--pace-ms``), which is what a relayed token stream costs per event.
The last lines put two hops (edge → router → providers) beside ``make bench``'s targets.
It is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.args import positive_int
from gateway_common.config import TlsConfig
from gateway_common.tls import TlsMaterial, channel_credentials, load_material, server_credentials, write_local_ca
from suite.supervisor import free_port

_NAMES = ("floor-server", "floor-client")
_CALLERS = 8
"""Concurrent callers of the unary row that shares them."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, count: int, pace_s: float) -> None:
        self._count = count
        self._pace_s = pace_s

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        message = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        for _ in range(self._count):
            if self._pace_s:
                await asyncio.sleep(self._pace_s)
            yield message


def _material(tls_dir: str, name: str) -> TlsMaterial:
    material = load_material(TlsConfig(dir=tls_dir), name)
    assert material is not None
    return material


async def _serve(port: int, count: int, pace_s: float, tls_dir: str) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Health(count, pace_s), server)
    if tls_dir:
        credentials = server_credentials(_material(tls_dir, _NAMES[0]), require_client_cert=True)
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the client starts measuring
    start = _cpu_s()
    await loop.run_in_executor(None, sys.stdin.readline)  # the client is done
    print(f"{_cpu_s() - start:.6f}", flush=True)
    await server.stop(0)


async def _call(port: int, mode: str, count: int, tls_dir: str) -> None:
    target = f"127.0.0.1:{port}"
    if tls_dir:
        channel = grpc.aio.secure_channel(target, channel_credentials(_material(tls_dir, _NAMES[1])))
    else:
        channel = grpc.aio.insecure_channel(target)
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        for _ in range(200):  # warm the connection up
            await stub.Check(request)
        print("go", flush=True)
        start = _cpu_s()
        latencies: list[float] = []
        if mode == "unary1":
            for _ in range(count):
                sent = time.perf_counter()
                await stub.Check(request)
                latencies.append(time.perf_counter() - sent)
        elif mode == "unary":

            async def caller(calls: int) -> None:
                for _ in range(calls):
                    await stub.Check(request)

            await asyncio.gather(*(caller(count // _CALLERS) for _ in range(_CALLERS)))
        else:
            async for _ in stub.Watch(request):
                pass
        cpu_s = _cpu_s() - start
        print(f"{cpu_s:.6f} {statistics.median(latencies) if latencies else 0.0:.9f}", flush=True)


def _side(role: str, port: int, mode: str, count: int, pace_s: float, tls_dir: str) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(port, count, pace_s, tls_dir) if role == "server" else _call(port, mode, count, tls_dir))


def _measure(mode: str, count: int, pace_s: float, tls_dir: str) -> tuple[float, float, float]:
    """CPU µs per message of the client and of the server, and the p50 round trip in µs (one
    caller's unary calls; 0 otherwise)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.grpc_floor", "--side"]
    common = [str(port), mode, str(count), str(pace_s), tls_dir]
    server = subprocess.Popen([*argv, "server", *common], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the server did not start")
        client = subprocess.Popen([*argv, "client", *common], stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        if client.stdout.readline().strip() != "go":
            raise RuntimeError("the client did not start")
        server.stdin.write("go\n")
        server.stdin.flush()
        client_s, p50_s = (float(field) for field in client.stdout.readline().split())
        client.wait(timeout=60)
        server.stdin.write("done\n")
        server.stdin.flush()
        server_s = float(server.stdout.readline())
    finally:
        server.wait(timeout=60)
    done = count // _CALLERS * _CALLERS if mode == "unary" else count  # what the callers made
    return client_s / done * 1e6, server_s / done * 1e6, p50_s * 1e6


_HOPS = 2
"""gRPC hops on the gateway's request path: edge → router, router → providers."""


def _rows(args: argparse.Namespace, tls_dir: str) -> list[tuple[str, tuple[float, float, float]]]:
    return [
        ("unary call, 1 caller", _measure("unary1", args.calls // 4, 0.0, tls_dir)),
        ("unary call, 8 concurrent callers", _measure("unary", args.calls, 0.0, tls_dir)),
        ("streamed message, burst", _measure("stream", args.calls, 0.0, tls_dir)),
        (
            f"streamed message, one every {args.pace_ms:g} ms",
            _measure("stream", args.paced, args.pace_ms / 1000, tls_dir),
        ),
    ]


def _report(rows: list[tuple[str, tuple[float, float, float]]], transport: str) -> None:
    print(f"\ngRPC floor (grpc.aio {grpc.__version__}, uvloop, {transport} loopback, empty health messages)")
    print(f"  {'':44}{'client µs':>12}{'server µs':>12}{'both µs':>12}{'p50 µs':>10}")
    for label, (client_us, server_us, p50_us) in rows:
        p50 = f"{p50_us:10.0f}" if p50_us else f"{'':10}"
        print(f"  {label:44}{client_us:12.1f}{server_us:12.1f}{client_us + server_us:12.1f}{p50}")
    (_, _, p50_us), (c8, s8, _), (cb, sb, _), _ = (figures for _, figures in rows)
    # The burst is the cheapest a message gets (writes and wake-ups shared): the lower bound of a
    # relayed event, whatever the pacing and however many streams share the connection.
    print(f"  {_HOPS} hops and no gateway code, against make bench's targets for the whole suite:")
    print(f"    CPU per unary request          {_HOPS * (c8 + s8) / 1000:6.3f} ms   (target ≤ 1.5)")
    print(f"    added p50, 1 caller            {_HOPS * p50_us / 1000:6.3f} ms   (target ≤ 1.5)")
    print(f"    CPU per relayed event, at best {_HOPS * (cb + sb) / 1000:6.3f} ms   (target ≤ 0.12)")


def main() -> None:
    """Print the CPU per message of each kind, client and server side, and one caller's round trip."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=positive_int, default=4000, help="unary calls (and burst messages), 8 or more")
    parser.add_argument("--paced", type=positive_int, default=500, help="paced stream messages")
    parser.add_argument("--pace-ms", type=float, default=2.0)
    parser.add_argument("--tls", action="store_true", help="mutual TLS, as the suite's internal gRPC runs")
    parser.add_argument("--side", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.calls < _CALLERS:
        parser.error(f"--calls must be {_CALLERS} or more: {_CALLERS} callers share them")
    if args.pace_ms < 0:
        parser.error("--pace-ms must be 0 or more")
    if args.side:
        role, port, mode, count, pace, tls_dir = args.side
        _side(role, int(port), mode, int(count), float(pace), tls_dir)
        return
    started = time.monotonic()
    if args.tls:
        with tempfile.TemporaryDirectory(prefix="grpc-floor-") as tls_dir:
            write_local_ca(Path(tls_dir), _NAMES, valid_days=1)
            _report(_rows(args, tls_dir), "mutual TLS")
    else:
        _report(_rows(args, ""), "plaintext")
    print(f"  ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
