"""``python -m services.providers`` runs the providers service."""

from gateway_common.grpc_server import main

from .server import build

main("providers", build)
