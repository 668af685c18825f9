"""``python -m services.auth`` runs the auth service until SIGTERM."""

from gateway_common.grpc_server import main

from .server import build

main("auth", build)
