"""``python -m bench.grpc_floor``: what one gRPC message costs in CPU on this machine, with nothing else.

The gateway's request path has two gRPC hops (edge → router → providers); whatever the services do,
each hop costs at least what grpc.aio spends on an empty call. This measures that floor: a client
process and a server process on loopback (plaintext, uvloop, as the services run), the standard
health service as the server (no work of ours), and user + system CPU of each side per call:
- unary: ``Health.Check``, 8 concurrent callers;
- streamed: ``Health.Watch`` answering a burst of messages, and the same paced (one message every
  ``--pace-ms``), which is what a relayed token stream costs per event.
It is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from suite.supervisor import free_port


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


async def _serve(port: int, count: int, pace_s: float) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Health(count, pace_s), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the client starts measuring
    start = _cpu_s()
    await loop.run_in_executor(None, sys.stdin.readline)  # the client is done
    print(f"{_cpu_s() - start:.6f}", flush=True)
    await server.stop(0)


async def _call(port: int, mode: str, count: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        for _ in range(200):  # warm the connection up
            await stub.Check(request)
        print("go", flush=True)
        start = _cpu_s()
        if mode == "unary":

            async def caller(calls: int) -> None:
                for _ in range(calls):
                    await stub.Check(request)

            await asyncio.gather(*(caller(count // 8) for _ in range(8)))
        else:
            async for _ in stub.Watch(request):
                pass
        print(f"{_cpu_s() - start:.6f}", flush=True)


def _side(role: str, port: int, mode: str, count: int, pace_s: float) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(port, count, pace_s) if role == "server" else _call(port, mode, count))


def _measure(mode: str, count: int, pace_s: float) -> tuple[float, float]:
    """CPU µs per message of the client and of the server."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.grpc_floor", "--side"]
    common = [str(port), mode, str(count), str(pace_s)]
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
        client_s = float(client.stdout.readline())
        client.wait(timeout=60)
        server.stdin.write("done\n")
        server.stdin.flush()
        server_s = float(server.stdout.readline())
    finally:
        server.wait(timeout=60)
    return client_s / count * 1e6, server_s / count * 1e6


def main() -> None:
    """Print the CPU per message of each kind, client and server side."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4000, help="unary calls (and burst messages)")
    parser.add_argument("--paced", type=int, default=500, help="paced stream messages")
    parser.add_argument("--pace-ms", type=float, default=2.0)
    parser.add_argument("--side", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        role, port, mode, count, pace = args.side
        _side(role, int(port), mode, int(count), float(pace))
        return
    started = time.monotonic()
    rows = [
        ("unary call (8 concurrent callers)", _measure("unary", args.calls, 0.0)),
        ("streamed message, burst", _measure("stream", args.calls, 0.0)),
        (f"streamed message, one every {args.pace_ms:g} ms", _measure("stream", args.paced, args.pace_ms / 1000)),
    ]
    print(f"\ngRPC floor (grpc.aio {grpc.__version__}, uvloop, plaintext loopback, empty health messages)")
    print(f"  {'':44}{'client µs':>12}{'server µs':>12}{'both µs':>12}")
    for label, (client_us, server_us) in rows:
        print(f"  {label:44}{client_us:12.1f}{server_us:12.1f}{client_us + server_us:12.1f}")
    print(f"  ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
