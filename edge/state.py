"""What the edge's routes share: the config and one long-lived channel per service it calls."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from gateway.auth.v1 import auth_pb2_grpc
from gateway.router.v1 import router_pb2_grpc
from gateway_common import tracing
from gateway_common.config import GatewayConfig
from gateway_common.grpc_client import open_channel
from gateway_common.tls import client_credentials


@dataclass
class EdgeState:
    """Channels are opened once at start and reused by every request."""

    config: GatewayConfig
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The edge's identity lets it reach auth's admin RPCs and every service's health; the
        # router needs no client certificate, but one does no harm on the same credentials.
        credentials = client_credentials(self.config.tls, "edge")
        for name in ("router", "auth", "ratelimit", "providers", "metering"):
            self.channels[name] = open_channel(getattr(self.config.services, name).address, credentials=credentials)
        self.router = router_pb2_grpc.RouterServiceStub(self.channels["router"])
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channels["auth"])
        # Read per request; fixed once the process has started (tracing is configured before the app).
        self.trusted_proxies = tuple(self.config.edge.trusted_proxies)
        self.tracing = tracing.enabled()

    async def close(self) -> None:
        """Close every channel."""
        for channel in self.channels.values():
            await channel.close(None)
