"""``python -m services.providers`` runs the providers service."""

from gateway_common.config import GatewayConfig, effective_providers
from gateway_common.grpc_server import main

from .server import build


def _use_uvloop(config: GatewayConfig) -> bool:
    # The Gemini CLI adapter spawns a process per call. Under uvloop (libuv's spawn, beside gRPC's
    # threads) CI saw every CLI of one call die with SIGABRT before it ran; asyncio's own
    # subprocess spawning never did. A deployment with a CLI provider keeps asyncio's loop.
    return not any(provider.type == "gemini-cli" for provider in effective_providers(config).values())


main("providers", build, _use_uvloop)
