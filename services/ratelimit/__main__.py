"""Run the rate limit service: ``python -m services.ratelimit``."""

from gateway_common.grpc_server import main

from .server import build

main("ratelimit", build)
