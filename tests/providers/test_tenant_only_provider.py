"""A provider with no global key serves tenants with their own credentials, and refuses the others
clearly (FAILED_PRECONDITION naming the provider) without calling the upstream: the LLM Proxy
Gateway's model of per-user credentials and no global key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.auth.v1 import credentials_pb2_grpc
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason
from services.providers.server import build
from services.ratelimit.credentials import CredentialSelector
from services.ratelimit.limiter import Limiter
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.storage.cooldown import Backoff, MemoryCooldowns
from services.ratelimit.storage.memory import MemoryStore
from tests.providers.harness import chunks_in
from tests.providers.test_credential_selection import (
    PROVIDER,
    REQUEST,
    TARGET,
    FakeCredentials,
    Seen,
    World,
    api_key,
    upstream,
)

__all__ = ["upstream"]  # the module-scoped fake upstream


@pytest.fixture
async def keyless(upstream: tuple[str, Seen]) -> AsyncIterator[World]:
    """The providers service with ``up`` configured but its key variable unset."""
    base_url, seen = upstream
    seen.authorizations.clear()
    fake = FakeCredentials()  # type: ignore[abstract]  # the admin RPCs are auth's, unused here
    limiter = Limiter(MemoryStore(), outage_policy="fail_closed", default_ttl_s=30)
    backends = grpc.aio.server()
    credentials_pb2_grpc.add_CredentialServiceServicer_to_server(fake, backends)
    selector = CredentialSelector(limiter, MemoryCooldowns(Backoff()))
    ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(limiter, selector), backends)
    address = f"127.0.0.1:{backends.add_insecure_port('127.0.0.1:0')}"
    await backends.start()
    config = GatewayConfig.model_validate(
        {
            "tls": {"internal": "off"},
            "services": {"auth": {"address": address}, "ratelimit": {"address": address}},
            "providers": {PROVIDER: {"type": "openai", "base_url": f"{base_url}/v1", "api_key_env": "UP_KEY"}},
        }
    )
    app = build(config, listen="127.0.0.1:0", env={})
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{await app.start()}")
    ratelimit_channel = grpc.aio.insecure_channel(address)
    try:
        yield World(
            providers_pb2_grpc.ProviderServiceStub(channel),
            ratelimit_pb2_grpc.RateLimitServiceStub(ratelimit_channel),
            fake,
            seen,
        )
    finally:
        await channel.close(None)
        await ratelimit_channel.close(None)
        await app.stop(0)
        await backends.stop(0)


async def test_a_tenant_credential_serves_a_provider_without_a_global_key(keyless: World) -> None:
    keyless.credentials.by_tenant[("t1", PROVIDER)] = [api_key("cred_a", "key-a", 1)]
    reply = await keyless.providers.Chat(
        providers_pb2.ChatRequest(target=TARGET, completion=REQUEST, tenant_id="t1"), timeout=10
    )
    stream = providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST, tenant_id="t1")
    replies = [r async for r in keyless.providers.StreamChat(stream, timeout=10)]

    assert reply.credential_id == "cred_a"
    assert reply.completion.choices[0].message.text == "ok"
    assert replies[0].credential_id == "cred_a"
    assert "".join(c.choices[0].delta.content for r in replies for c in chunks_in(r) if c.choices) == "ok"
    assert keyless.seen.authorizations == ["Bearer key-a", "Bearer key-a"]


@pytest.mark.parametrize("tenant", ["t-none", ""])
async def test_without_a_credential_the_refusal_names_the_provider_and_nothing_goes_upstream(
    keyless: World, tenant: str
) -> None:
    errors: list[GatewayError] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await keyless.providers.Chat(
            providers_pb2.ChatRequest(target=TARGET, completion=REQUEST, tenant_id=tenant), timeout=10
        )
    errors.append(GatewayError.from_rpc_error(raised.value))
    stream = providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST, tenant_id=tenant)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        _ = [r async for r in keyless.providers.StreamChat(stream, timeout=10)]
    errors.append(GatewayError.from_rpc_error(raised.value))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await keyless.providers.Embed(providers_pb2.EmbedRequest(target=TARGET, tenant_id=tenant), timeout=10)
    errors.append(GatewayError.from_rpc_error(raised.value))

    for error in errors:
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, Reason.MISSING_API_KEY)
        assert f"no credential for provider '{PROVIDER}'" in error.message and "add one" in error.message
        assert error.metadata["provider"] == PROVIDER and error.metadata["retryable"] == "false"
    assert keyless.seen.authorizations == []
