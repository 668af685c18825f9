"""``python -m gateway_common.healthcheck PORT [HOST [NAME]]``: exit 0 when the gRPC service there is SERVING.

Used by container healthchecks; it needs no grpc_health_probe binary in the image. With TLS
configured (``GATEWAY_TLS_*``, see ``gateway_common.config.TlsConfig``) it dials over TLS and shows
the certificate of process ``NAME`` (any certificate of the CA will do: health is open to every
verified peer); ``GATEWAY_INTERNAL_TLS=off`` or no TLS settings mean plaintext.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_common.config import ConfigError, load_config
from gateway_common.tls import client_credentials


def check(target: str, timeout_s: float = 2.0, credentials: grpc.ChannelCredentials | None = None) -> bool:
    """Whether the server at ``target`` reports SERVING for the whole server."""
    channel = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    """Entry point; returns the exit status."""
    if not argv or not argv[0].isdigit():
        print("usage: python -m gateway_common.healthcheck PORT [HOST [NAME]]", file=sys.stderr)
        return 2
    host = argv[1] if len(argv) > 1 else "127.0.0.1"
    name = argv[2] if len(argv) > 2 else "healthcheck"
    try:
        credentials = client_credentials(load_config().tls, name)
    except ConfigError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 2
    return 0 if check(f"{host}:{argv[0]}", credentials=credentials) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
