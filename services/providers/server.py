"""The providers process: the adapters (one pooled HTTP client per upstream), the servicer, the lifecycle.

Start: the adapters are built from the config and the environment (a provider missing its key is
reported then), so the service is SERVING as soon as it listens; nothing upstream is called at start.
Stop: NOT_SERVING, in-flight calls and streams finish within the grace period, then every HTTP
client is closed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import GrpcServer, ServiceApp, ServiceRegistration
from services.providers.registry import build_registry
from services.providers.servicer import ProviderServicer


def build(config: GatewayConfig, *, listen: str | None = None, env: Mapping[str, str] | None = None) -> ServiceApp:
    """The providers service on ``listen`` (default: ``config.services.providers.listen``).

    ``env`` holds the upstream keys and endpoints (default: the process environment).
    """
    registry = build_registry(config, os.environ if env is None else env)
    registration = ServiceRegistration(
        add=providers_pb2_grpc.add_ProviderServiceServicer_to_server,
        servicer=ProviderServicer(registry),
        name=providers_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
    )
    server = GrpcServer(listen or config.services.providers.listen, [registration])
    return ServiceApp("providers", server, on_stop=registry.aclose)
