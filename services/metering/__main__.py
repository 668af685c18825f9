"""``python -m services.metering`` runs the metering service."""

from gateway_common.grpc_server import main

from .server import build

main("metering", build)
