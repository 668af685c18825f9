"""The router tells providers which tenant a call is for, and records the tenant credential that
served it in the usage event (unary and streamed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2_grpc
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import GrpcServer, ServiceRegistration
from services.router.server import build
from tests.router.test_orchestration import MD, FakeAuth, FakeMetering, FakeRateLimit, _chunk, _request, _until


@dataclass
class CredentialProviders(providers_pb2_grpc.ProviderServiceServicer):
    """Answers as if the tenant's credential "cred-<tenant>" served every call."""

    tenants: list[str] = field(default_factory=list)

    async def Chat(self, request: providers_pb2.ChatRequest, context: Any) -> providers_pb2.ChatResponse:
        self.tenants.append(request.tenant_id)
        completion = chat_pb2.ChatCompletion(id="x", model="up-model", provider=request.target.provider)
        choice = completion.choices.add(index=0, finish_reason=chat_pb2.FINISH_REASON_STOP)
        choice.message.role = chat_pb2.ROLE_ASSISTANT
        choice.message.text = "hello"
        completion.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7))
        return providers_pb2.ChatResponse(completion=completion, credential_id=f"cred-{request.tenant_id}")

    async def StreamChat(self, request: providers_pb2.StreamChatRequest, context: Any) -> AsyncIterator[Any]:
        self.tenants.append(request.tenant_id)
        first = _chunk("one ")
        first.credential_id = f"cred-{request.tenant_id}"
        yield first
        yield _chunk("two")
        yield _chunk(usage=True)


@dataclass
class Rig:
    router: router_pb2_grpc.RouterServiceAsyncStub
    providers: CredentialProviders
    metering: FakeMetering


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    providers, metering = CredentialProviders(), FakeMetering()
    fakes = {
        "auth": ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, FakeAuth(), "a"),
        "ratelimit": ServiceRegistration(
            ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, FakeRateLimit(), "r"
        ),
        "providers": ServiceRegistration(providers_pb2_grpc.add_ProviderServiceServicer_to_server, providers, "p"),
        "metering": ServiceRegistration(metering_pb2_grpc.add_MeteringServiceServicer_to_server, metering, "m"),
    }
    servers: list[GrpcServer] = []
    addresses: dict[str, dict[str, str]] = {}
    for name, registration in fakes.items():
        server = GrpcServer("127.0.0.1:0", [registration])
        port = await server.start()
        servers.append(server)
        addresses[name] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    config = GatewayConfig.model_validate(
        {
            "services": {**addresses, "router": {"listen": "127.0.0.1:0", "address": "unused"}},
            "providers": {"p1": {"type": "openai_compatible", "base_url": "http://x"}},
            "metering": {"flush_interval_s": 0.05, "spool_path": str(tmp_path / "usage-spool.db")},
        }
    )
    app = build(config)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Rig(router_pb2_grpc.RouterServiceStub(channel), providers, metering)
    finally:
        await channel.close(None)
        await app.stop(0)
        for server in servers:
            await server.stop(0)


async def test_a_unary_call_names_the_tenant_and_its_usage_the_credential(rig: Rig) -> None:
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p1:ok")), metadata=MD)
    assert rig.providers.tenants == ["t1"]
    await _until(lambda: rig.metering.events)
    assert rig.metering.events[0].credential_id == "cred-t1"


async def test_a_stream_names_the_tenant_and_its_usage_the_credential(rig: Rig) -> None:
    stream = rig.router.StreamChat(router_pb2.StreamChatRequest(completion=_request("p1:ok")), metadata=MD)
    texts = [r.chunk.choices[0].delta.content async for r in stream if r.chunk.choices]
    assert "".join(texts) == "one two"
    assert rig.providers.tenants == ["t1"]
    await _until(lambda: rig.metering.events)
    assert rig.metering.events[0].credential_id == "cred-t1"
