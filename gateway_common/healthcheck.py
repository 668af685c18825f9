"""``python -m gateway_common.healthcheck PORT [HOST]``: exit 0 when the gRPC service there is SERVING.

Used by container healthchecks; it needs no grpc_health_probe binary in the image.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, timeout_s: float = 2.0) -> bool:
    """Whether the server at ``target`` reports SERVING for the whole server."""
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    """Entry point; returns the exit status."""
    if not argv or not argv[0].isdigit():
        print("usage: python -m gateway_common.healthcheck PORT [HOST]", file=sys.stderr)
        return 2
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    return 0 if check(f"{host}:{argv[0]}") else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
