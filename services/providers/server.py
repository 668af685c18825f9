"""The providers process: the adapters (one pooled HTTP client per upstream), the servicer, the lifecycle.

Start: the adapters are built from the config and the environment (a provider missing its key is
reported then), so the service is SERVING as soon as it listens; nothing upstream is called at start.
One channel each to auth (tenants' credentials) and ratelimit (their windows and cooldowns) is
opened lazily, used only for calls made for a tenant.
Stop: NOT_SERVING, in-flight calls and streams finish within the grace period, then every HTTP
client (the upstreams', the OAuth token endpoints') and both channels are closed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.auth.v1 import credentials_pb2_grpc
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig, GeminiCliProviderConfig, HttpProviderConfig
from gateway_common.grpc_client import open_channel
from gateway_common.grpc_server import GrpcServer, ServiceApp, ServiceRegistration
from gateway_common.tls import client_credentials
from services.providers.registry import build_registry
from services.providers.selection import CredentialSelection
from services.providers.servicer import ProviderServicer
from services.providers.tenant_credentials import CredentialCache, OAuthClientConfig, OAuthRefresher


def oauth_clients(config: GatewayConfig, env: Mapping[str, str]) -> dict[str, OAuthClientConfig]:
    """The token endpoint and client of every provider configured to refresh tenants' OAuth tokens."""
    clients: dict[str, OAuthClientConfig] = {}
    for name, entry in config.providers.items():
        if isinstance(entry, HttpProviderConfig) and entry.oauth_token_url:
            client_id = env.get(entry.oauth_client_id_env or "", "")
            secret = env.get(entry.oauth_client_secret_env or "", "")
            clients[name] = OAuthClientConfig(entry.oauth_token_url, client_id, secret)
        elif isinstance(entry, GeminiCliProviderConfig):
            # Its tenants' logins come from /ui/gemini, so they refresh with that page's client.
            login = config.edge.gemini_oauth
            client_id = env.get(login.client_id_env, "")
            if client_id:
                clients[name] = OAuthClientConfig(login.token_url, client_id, env.get(login.client_secret_env, ""))
    return clients


def build(config: GatewayConfig, *, listen: str | None = None, env: Mapping[str, str] | None = None) -> ServiceApp:
    """The providers service on ``listen`` (default: ``config.services.providers.listen``).

    ``env`` holds the upstream keys and endpoints (default: the process environment).
    """
    env = os.environ if env is None else env
    registry = build_registry(config, env)
    credentials = client_credentials(config.tls, "providers")
    auth_channel = open_channel(config.services.auth.address, credentials=credentials)
    ratelimit_channel = open_channel(config.services.ratelimit.address, credentials=credentials)
    source = credentials_pb2_grpc.CredentialServiceStub(auth_channel)
    refresher = OAuthRefresher(source, oauth_clients(config, env))
    selection = CredentialSelection(
        CredentialCache(source), ratelimit_pb2_grpc.RateLimitServiceStub(ratelimit_channel), refresher
    )
    registration = ServiceRegistration(
        add=providers_pb2_grpc.add_ProviderServiceServicer_to_server,
        servicer=ProviderServicer(registry, selection),
        name=providers_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
    )
    server = GrpcServer(listen or config.services.providers.listen, [registration])

    async def on_stop() -> None:
        await registry.aclose()
        await refresher.aclose()
        await auth_channel.close(None)
        await ratelimit_channel.close(None)

    return ServiceApp("providers", server, on_stop=on_stop)
