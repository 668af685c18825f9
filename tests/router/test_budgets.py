"""Reservations sized as ceilings: the router against a real rate limit service (memory store) and
fakes of auth, providers and metering, over real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason
from gateway_common.grpc_server import GrpcServer, ServiceRegistration
from services.ratelimit.limiter import Limiter
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.storage.memory import MemoryStore
from services.router.server import build

DAY_TOKENS = 6_000
"""The key's token budget per day."""

MINUTE_TOKENS = 50_000


def _quota(unit: int, window: int, limit: int) -> quota_pb2.Quota:
    return quota_pb2.Quota(unit=unit, window=window, limit=limit)  # type: ignore[arg-type]


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, context: Any) -> auth_pb2.AuthenticateResponse:
        tenant = request.api_key.removeprefix("gw-")
        limits = auth_pb2.Limits(
            quotas=[
                _quota(quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_MINUTE, MINUTE_TOKENS),
                _quota(quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_DAY, DAY_TOKENS if tenant != "rich" else 10**9),
            ]
        )
        principal = auth_pb2.Principal(tenant_id=tenant, key_id="k", scopes=["chat"], key_limits=limits)
        return auth_pb2.AuthenticateResponse(principal=principal, cache_ttl_seconds=2)


@dataclass
class FakeProviders(providers_pb2_grpc.ProviderServiceServicer):
    """Answers that ignore max_tokens: a unary "hello", or a stream of ``chunks`` 20-byte deltas."""

    requests: list[chat_pb2.ChatCompletionRequest] = field(default_factory=list)
    chunks: int = 400

    async def Chat(self, request: providers_pb2.ChatRequest, context: Any) -> providers_pb2.ChatResponse:
        self.requests.append(request.completion)
        completion = chat_pb2.ChatCompletion(id="x", model="up", provider=request.target.provider)
        choice = completion.choices.add(index=0, finish_reason=chat_pb2.FINISH_REASON_STOP)
        choice.message.role = chat_pb2.ROLE_ASSISTANT
        choice.message.text = "hello"
        completion.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7))
        return providers_pb2.ChatResponse(completion=completion)

    async def StreamChat(
        self, request: providers_pb2.StreamChatRequest, context: Any
    ) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        self.requests.append(request.completion)
        for _ in range(self.chunks):
            chunk = chat_pb2.ChatCompletionChunk(id="c", model="up")
            chunk.choices.add(index=0).delta.content = "twenty bytes of text"
            yield providers_pb2.StreamChatResponse(chunk=chunk)
        usage = chat_pb2.ChatCompletionChunk(id="c", model="up")
        usage.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=10, completion_tokens=self.chunks * 4))
        yield providers_pb2.StreamChatResponse(chunk=usage)


class FakeMetering(metering_pb2_grpc.MeteringServiceServicer):
    def __init__(self) -> None:
        self.events: list[metering_pb2.UsageEvent] = []

    async def RecordEvents(
        self, request: metering_pb2.RecordEventsRequest, context: Any
    ) -> metering_pb2.RecordEventsResponse:
        self.events.extend(request.events)
        return metering_pb2.RecordEventsResponse(recorded=len(request.events))


@dataclass
class Rig:
    router: router_pb2_grpc.RouterServiceAsyncStub
    ratelimit: ratelimit_pb2_grpc.RateLimitServiceAsyncStub
    providers: FakeProviders
    metering: FakeMetering


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    providers, metering = FakeProviders(), FakeMetering()
    limiter = Limiter(MemoryStore(), outage_policy="fail_closed", default_ttl_s=60)
    fakes = {
        "auth": ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, FakeAuth(), "a"),
        "ratelimit": ServiceRegistration(
            ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, RateLimitServicer(limiter), "r"
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
            "models": {
                "plain": {"deployments": [{"provider": "p1", "model": "m", "output_usd_per_million": 1}]},
                "native": {"deployments": [{"provider": "openai", "model": "gpt"}]},
                "short": {
                    "deployments": [
                        {"provider": "p1", "model": "a", "max_output_tokens": 512},
                        {"provider": "p1", "model": "b", "max_output_tokens": 256},
                    ]
                },
            },
            "limits": {"stream_extension_tokens": 400},
            "metering": {"flush_interval_s": 0.05},
        }
    )
    app = build(config)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    ratelimit_channel = grpc.aio.insecure_channel(addresses["ratelimit"]["address"])
    try:
        yield Rig(
            router_pb2_grpc.RouterServiceStub(channel),
            ratelimit_pb2_grpc.RateLimitServiceStub(ratelimit_channel),
            providers,
            metering,
        )
    finally:
        await channel.close()
        await ratelimit_channel.close()
        await app.stop(0)
        for server in servers:
            await server.stop(0)


def _md(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer gw-{tenant}"), ("x-request-id", f"req-{tenant}"))


def _request(model: str = "plain", **fields: Any) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi there")], **fields
    )


async def _day_tokens_used(rig: Rig, tenant: str) -> int:
    """The key's day token counter, read with an Acquire that reserves nothing."""
    descriptor = ratelimit_pb2.Descriptor(
        entries=[
            ratelimit_pb2.DescriptorEntry(key="tenant", value=tenant),
            ratelimit_pb2.DescriptorEntry(key="key", value="k"),
        ]
    )
    limits = ratelimit_pb2.DescriptorLimits(
        descriptor=descriptor, quotas=[_quota(quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_DAY, 10**12)]
    )
    response = await rig.ratelimit.Acquire(
        ratelimit_pb2.AcquireRequest(reservation_id=f"probe-{asyncio.get_running_loop().time()}", limits=[limits])
    )
    return 10**12 - response.statuses[0].remaining


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.01)


async def test_a_request_without_max_tokens_is_capped_at_what_it_reserves_and_says_so(rig: Rig) -> None:
    call = rig.router.Chat(router_pb2.ChatRequest(completion=_request()), metadata=_md("t1"))
    await call
    headers = dict(await call.initial_metadata())

    # An OpenAI-compatible server gets the field they all read.
    assert rig.providers.requests[-1].max_tokens == 1024  # limits.default_completion_tokens
    assert headers["x-gateway-max-tokens-capped"] == "1024"


async def test_openai_gets_the_cap_as_max_completion_tokens(rig: Rig) -> None:
    # OpenAI's reasoning models refuse max_tokens; Anthropic and Gemini translate either field.
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("native")), metadata=_md("t8"))

    sent = rig.providers.requests[-1]
    assert sent.max_completion_tokens == 1024 and not sent.HasField("max_tokens")


async def test_the_cap_is_the_smallest_max_output_of_the_deployments(rig: Rig) -> None:
    call = rig.router.Chat(router_pb2.ChatRequest(completion=_request("short")), metadata=_md("t2"))
    await call

    assert rig.providers.requests[-1].max_tokens == 256
    assert dict(await call.initial_metadata())["x-gateway-max-tokens-capped"] == "256"


async def test_a_request_with_max_tokens_is_left_alone(rig: Rig) -> None:
    call = rig.router.Chat(router_pb2.ChatRequest(completion=_request(max_completion_tokens=50)), metadata=_md("t3"))
    await call

    sent = rig.providers.requests[-1]
    assert sent.max_completion_tokens == 50 and not sent.HasField("max_tokens")
    assert "x-gateway-max-tokens-capped" not in dict(await call.initial_metadata())


async def test_a_request_that_can_never_fit_a_limit_is_a_400_naming_it(rig: Rig) -> None:
    request = _request(n=128, max_tokens=4096)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.router.Chat(router_pb2.ChatRequest(completion=request), metadata=_md("t4"))

    error = GatewayError.from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == Reason.INVALID_REQUEST
    assert "can never fit" in error.message and "tokens/minute" in error.message
    assert error.metadata["param"] == "max_tokens"
    assert "try again" not in error.message.lower()
    assert rig.providers.requests == []
    assert await _day_tokens_used(rig, "t4") == 0, "a refused request reserves nothing"


async def test_a_prompt_larger_than_a_window_names_the_messages(rig: Rig) -> None:
    request = _request(max_tokens=10)
    request.messages[0].text = "x" * (MINUTE_TOKENS + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.router.Chat(router_pb2.ChatRequest(completion=request), metadata=_md("t6"))

    error = GatewayError.from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["param"] == "messages"


async def test_a_request_that_fits_the_window_but_not_now_is_still_a_429(rig: Rig) -> None:
    # Another request of the key holds most of the day's tokens.
    descriptor = ratelimit_pb2.Descriptor(
        entries=[
            ratelimit_pb2.DescriptorEntry(key="tenant", value="t7"),
            ratelimit_pb2.DescriptorEntry(key="key", value="k"),
        ]
    )
    held = ratelimit_pb2.DescriptorLimits(
        descriptor=descriptor, quotas=[_quota(quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_DAY, DAY_TOKENS)]
    )
    await rig.ratelimit.Acquire(
        ratelimit_pb2.AcquireRequest(
            reservation_id="held", limits=[held], amounts=ratelimit_pb2.Amounts(tokens=DAY_TOKENS - 100)
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request(max_tokens=2000)), metadata=_md("t7"))

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_stream_that_outgrows_its_limit_is_stopped_with_an_error_not_cut_silently(rig: Rig) -> None:
    stream = rig.router.StreamChat(
        router_pb2.StreamChatRequest(completion=_request(max_tokens=100)), metadata=_md("t5")
    )
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for item in stream:
            received += sum(len(c.delta.content.encode()) for c in item.chunk.choices)

    error = GatewayError.from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "stopped" in error.message and "incomplete" in error.message
    assert error.metadata["stream_stopped"] == "true"
    assert 0 < received < 400 * 20, "the upstream ignored max_tokens; the gateway did not"
    # Settled at what was counted: within the day's limit, plus at most the one chunk that did not fit.
    await _until(lambda: _settled(rig, "t5"))
    event = next(e for e in rig.metering.events if e.tenant_id == "t5")
    billed = event.prompt_tokens + event.completion_tokens
    assert event.usage_estimated and received <= billed <= DAY_TOKENS + 20 + 1
    # Settlement runs in the background: the first reservation takes the whole actual, then the
    # extensions give theirs back (the counter is briefly higher, never lower).
    await _until(lambda: _equals(_day_tokens_used(rig, "t5"), billed))


async def _settled(rig: Rig, tenant: str) -> bool:
    return any(e.tenant_id == tenant for e in rig.metering.events)


async def test_a_long_stream_within_the_limits_runs_to_the_end(rig: Rig) -> None:
    # Reserved 100 tokens; the answer counts up to 8,000 as a ceiling: the reservation grows instead.
    stream = rig.router.StreamChat(
        router_pb2.StreamChatRequest(completion=_request(max_tokens=100)), metadata=_md("rich")
    )
    items = [item async for item in stream]

    assert sum(len(item.chunk.choices) for item in items) == 400
    assert items[-1].chunk.usage.completion_tokens == 1600
    await _until(lambda: _settled(rig, "rich"))
    # The upstream's count replaces the ceilings, extensions included.
    await _until(lambda: _equals(_day_tokens_used(rig, "rich"), 10 + 1600))


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)
