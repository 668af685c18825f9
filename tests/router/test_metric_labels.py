"""Client-chosen model names never become Prometheus label values: the router's series stay bounded.

2,500 made-up model names through the real router (over gRPC, fakes behind it) must not grow the
series of ``gateway_*`` metrics by more than the handful the configuration allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import REGISTRY

from gateway.auth.v1 import auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2_grpc
from gateway.providers.v1 import providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import GrpcServer, ServiceRegistration
from services.router.metrics import OTHER, MetricLabels
from services.router.server import build
from tests.router.test_orchestration import KEY, FakeAuth, FakeMetering, FakeProviders, FakeRateLimit

DISTINCT_MODELS = 2_500
CONFIG = {
    "providers": {"p1": {"type": "openai_compatible", "base_url": "http://x"}},
    "models": {"chat": {"deployments": [{"provider": "p1", "model": "ok"}]}},
    "default_model": "mock:gateway-demo",
}


def _router_series() -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """The label sets of every ``gateway_*`` sample in the default registry, per metric."""
    series: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("gateway_"):
            continue
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            series.setdefault(family.name, set()).add(labels)
    return series


def _label_values() -> set[str]:
    return {value for labels in _router_series().values() for labelset in labels for _, value in labelset}


@pytest.fixture
async def router() -> AsyncIterator[router_pb2_grpc.RouterServiceAsyncStub]:
    fakes = [
        ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, FakeAuth(), "a"),
        ServiceRegistration(ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, FakeRateLimit(), "r"),
        ServiceRegistration(providers_pb2_grpc.add_ProviderServiceServicer_to_server, FakeProviders(), "p"),
        ServiceRegistration(metering_pb2_grpc.add_MeteringServiceServicer_to_server, FakeMetering(), "m"),
    ]
    servers: list[GrpcServer] = []
    addresses: dict[str, dict[str, str]] = {}
    for name, registration in zip(("auth", "ratelimit", "providers", "metering"), fakes, strict=True):
        server = GrpcServer("127.0.0.1:0", [registration])
        port = await server.start()
        servers.append(server)
        addresses[name] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    config = GatewayConfig.model_validate(
        {**CONFIG, "services": {**addresses, "router": {"listen": "127.0.0.1:0", "address": "unused"}}}
    )
    app = build(config)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield router_pb2_grpc.RouterServiceStub(channel)
    finally:
        await channel.close()
        await app.stop(0)
        for server in servers:
            await server.stop(0)


def _request(model: str) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")], max_tokens=5
    )


@pytest.mark.timeout(120)
async def test_thousands_of_model_names_leave_the_series_bounded(
    router: router_pb2_grpc.RouterServiceAsyncStub,
) -> None:
    metadata = (("authorization", f"Bearer {KEY}"),)
    # Warm up every label combination the configuration allows, so the count below measures
    # only what the made-up names could add.
    await router.Chat(router_pb2.ChatRequest(completion=_request("chat")), metadata=metadata)
    async for _ in router.StreamChat(
        router_pb2.StreamChatRequest(completion=_request("p1:warm-up")), metadata=metadata
    ):
        pass
    before = sum(len(labelsets) for labelsets in _router_series().values())
    gate = asyncio.Semaphore(32)

    async def one(index: int) -> None:
        model = f"p1:made-up-{index}"
        async with gate:
            if index % 5 == 0:
                stream = router.StreamChat(router_pb2.StreamChatRequest(completion=_request(model)), metadata=metadata)
                async for _ in stream:
                    pass
            else:
                await router.Chat(router_pb2.ChatRequest(completion=_request(model)), metadata=metadata)

    await asyncio.gather(*(one(i) for i in range(DISTINCT_MODELS)))
    after = sum(len(labelsets) for labelsets in _router_series().values())
    assert after - before <= 10, f"{after - before} new series for {DISTINCT_MODELS} model names"
    assert not any("made-up" in value for value in _label_values())
    assert "p1:*" in _label_values()


def test_labels_come_from_the_configuration_only() -> None:
    labels = MetricLabels(GatewayConfig.model_validate(CONFIG))
    assert labels.model("chat") == "chat"  # an alias
    assert labels.model("p1:ok") == "p1:ok"  # a configured deployment
    assert labels.model("mock:gateway-demo") == "mock:gateway-demo"  # the default model
    assert labels.model("p1:anything-else") == "p1:*"  # a configured provider's other models
    assert labels.model("openai:gpt-made-up") == "openai:*"  # a built-in provider's
    assert labels.model("nobody:model") == OTHER
    assert labels.model("free text \u2603") == OTHER
    assert labels.provider("p1") == "p1"
    assert labels.provider("anthropic") == "anthropic"
    assert labels.provider("") == ""
    assert labels.provider("made-up") == OTHER
