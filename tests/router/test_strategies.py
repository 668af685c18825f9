"""Routing strategies: unit tests on a fake clock, and per-request choice through a real router."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2_grpc
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason
from gateway_common.grpc_server import GrpcServer, ServiceRegistration
from gateway_common.openai_wire import parse_chat_request
from services.router import policy
from services.router.observed import ObservedProviders
from services.router.planner import Candidate, Plan
from services.router.price_table import Price
from services.router.server import build
from services.router.strategies import ALLOW_PROVIDERS_PARAM, RouteStats, allow_only, rank
from tests.router.test_orchestration import KEY, LIMITED_KEY, FakeAuth, FakeMetering, FakeProviders, FakeRateLimit


def _priced(provider: str, model: str, input_usd: str, output_usd: str) -> Candidate:
    return Candidate(provider, model, Price(True, "config", Decimal(input_usd), Decimal(output_usd)))


DEAR = _priced("p1", "dear", "10", "30")
CHEAP = _priced("p2", "cheap", "1", "2")
# Cheap to read, dear to write: the cheapest depends on the request's estimated tokens.
READER = _priced("p3", "reader", "0.1", "60")
# Nothing knows its price: it "costs" $0, and must never win on cost for it.
UNPRICED = Candidate("p4", "unknown", Price(False, "unpriced"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cost_picks_the_cheapest_for_the_requests_tokens() -> None:
    stats = RouteStats(clock=Clock())
    assert rank("cost", [DEAR, CHEAP, READER], stats, 1000, 10) == (READER, CHEAP, DEAR)
    assert rank("cost", [DEAR, CHEAP, READER], stats, 1000, 1000) == (CHEAP, DEAR, READER)
    # Equal prices keep the configured order.
    twin = _priced("p9", "twin", "1", "2")
    assert rank("cost", [twin, CHEAP], stats, 10, 10) == (twin, CHEAP)
    # Unpriced is unknown, not free: it goes last.
    assert rank("cost", [UNPRICED, DEAR, CHEAP], stats, 1000, 1000) == (CHEAP, DEAR, UNPRICED)


def test_latency_follows_a_deployment_that_slows_down() -> None:
    clock = Clock()
    stats = RouteStats(half_life_s=10, clock=clock)
    a, b = Candidate("p1", "a"), Candidate("p2", "b")
    # Unknown deployments first: each gets observed.
    stats.first_token(a, 0.2)
    assert rank("latency", [a, b], stats, 10, 10) == (b, a)
    stats.first_token(b, 0.5)
    assert rank("latency", [a, b], stats, 10, 10) == (a, b)
    # a slows down: within a few half-lives of slow answers its average passes b's.
    for _ in range(6):
        clock.now += 5
        stats.first_token(a, 2.0)
        stats.first_token(b, 0.5)
    assert stats.latency(a) is not None and stats.latency(a) > 1.0  # type: ignore[operator]
    assert rank("latency", [a, b], stats, 10, 10) == (b, a)
    # ...and comes back when it is fast again.
    for _ in range(6):
        clock.now += 5
        stats.first_token(a, 0.1)
    assert rank("latency", [a, b], stats, 10, 10) == (a, b)
    # Not observed for many half-lives: unknown again, so it is tried first.
    clock.now += 10 * 60
    stats.first_token(a, 0.1)
    assert stats.latency(b) is None
    assert rank("latency", [a, b], stats, 10, 10) == (b, a)


def test_reliability_avoids_a_deployment_that_fails() -> None:
    clock = Clock()
    stats = RouteStats(half_life_s=30, clock=clock)
    a, b = Candidate("p1", "a"), Candidate("p2", "b")
    for _ in range(5):
        clock.now += 1
        stats.outcome(a, True)
        stats.outcome(b, True)
    assert rank("reliability", [a, b], stats, 1, 1) == (a, b)
    for _ in range(3):
        clock.now += 1
        stats.outcome(a, False)
        stats.outcome(b, True)
    assert stats.success_rate(a) < stats.success_rate(b)  # type: ignore[operator]
    assert rank("reliability", [a, b], stats, 1, 1) == (b, a)


def test_least_busy_spreads_across_deployments() -> None:
    stats = RouteStats(clock=Clock())
    a, b, c = Candidate("p1", "a"), Candidate("p2", "b"), Candidate("p3", "c")
    picks = []
    for _ in range(6):
        first = rank("least-busy", [a, b, c], stats, 1, 1)[0]
        picks.append(first.id)
        stats.started(first)
    assert sorted(picks) == sorted(["p1:a", "p2:b", "p3:c"] * 2)
    stats.ended(b)
    assert rank("least-busy", [a, b, c], stats, 1, 1)[0] == b


def test_strategies_stay_within_allowlists_and_allow_providers() -> None:
    stats = RouteStats(clock=Clock())
    plan = Plan("pick", (DEAR, CHEAP, READER), "cost")
    principal = auth_pb2.Principal(allowed_models=["p1:*", "p3:*"], policy=auth_pb2.Policy(deny_providers=["p3"]))
    allowed = policy.allowed_candidates(principal, plan)
    # The cheapest (p2) is not the key's, and p3 is denied to the tenant: cost picks among the rest.
    assert rank("cost", allow_only(allowed, (), "pick"), stats, 1000, 1000) == (DEAR,)
    # allow_providers narrows; it cannot bring back what the key or tenant left out.
    assert allow_only((DEAR, CHEAP), ("p2",), "pick") == (CHEAP,)
    with pytest.raises(GatewayError) as info:
        allow_only(allowed, ("p2", "p3"), "pick")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.metadata["param"] == ALLOW_PROVIDERS_PARAM


def test_the_gateway_extension_carries_strategy_allow_providers_and_budget() -> None:
    request, _ = parse_chat_request(
        {
            "model": "pick",
            "messages": [{"role": "user", "content": "hi"}],
            "gateway": {
                "max_cost_usd": 0.5,
                "constraints": {
                    "routing": {"strategy": "least-busy", "allow_providers": ["p1", "p2"]},
                    "budget": {"max_cost_usd": 0.01},
                },
            },
        }
    )
    assert request.gateway.strategy == chat_pb2.ROUTING_STRATEGY_LEAST_BUSY
    assert list(request.gateway.allow_providers) == ["p1", "p2"]
    assert request.gateway.max_cost_usd == 0.01  # the lower of the two caps
    budget_only, _ = parse_chat_request(
        {"messages": [{"role": "user", "content": "hi"}], "gateway": {"constraints": {"budget": {"max_cost_usd": 2}}}}
    )
    assert budget_only.gateway.max_cost_usd == 2
    for gateway, param in [
        ({"constraints": {"routing": {"strategy": "fastest"}}}, "gateway.constraints.routing.strategy"),
        ({"constraints": {"routing": {"allow_providers": []}}}, "gateway.constraints.routing.allow_providers"),
        ({"constraints": {"routing": {"allow_providers": [3]}}}, "gateway.constraints.routing.allow_providers[0]"),
        ({"constraints": {"routing": {"prefer": "x"}}}, "gateway.constraints.routing.prefer"),
        ({"constraints": {"budget": {"max_cost_usd": -1}}}, "gateway.constraints.budget.max_cost_usd"),
        ({"constraints": {"speed": {}}}, "gateway.constraints.speed"),
    ]:
        with pytest.raises(GatewayError) as info:
            parse_chat_request({"messages": [{"role": "user", "content": "hi"}], "gateway": gateway})
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, gateway
        assert info.value.metadata.get("param") == param, gateway


# -- through a real router ----------------------------------------------------------------------


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[tuple[router_pb2_grpc.RouterServiceAsyncStub, FakeProviders]]:
    providers = FakeProviders()
    fakes = [
        ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, FakeAuth(), "a"),
        ServiceRegistration(ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, FakeRateLimit(), "r"),
        ServiceRegistration(providers_pb2_grpc.add_ProviderServiceServicer_to_server, providers, "p"),
        ServiceRegistration(metering_pb2_grpc.add_MeteringServiceServicer_to_server, FakeMetering(), "m"),
    ]
    servers, addresses = [], {}
    for name, registration in zip(("auth", "ratelimit", "providers", "metering"), fakes, strict=True):
        server = GrpcServer("127.0.0.1:0", [registration])
        port = await server.start()
        servers.append(server)
        addresses[name] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    config = GatewayConfig.model_validate(
        {
            "services": {**addresses, "router": {"listen": "127.0.0.1:0", "address": "unused"}},
            "providers": {
                "p1": {"type": "openai_compatible", "base_url": "http://x"},
                "p2": {"type": "openai_compatible", "base_url": "http://y"},
            },
            "models": {
                "pick": {
                    "deployments": [
                        {"provider": "p1", "model": "dear", "input_usd_per_million": 10, "output_usd_per_million": 30},
                        {"provider": "p2", "model": "cheap", "input_usd_per_million": 1, "output_usd_per_million": 2},
                    ]
                },
                "flaky": {
                    "deployments": [{"provider": "p1", "model": "fail-503"}, {"provider": "p2", "model": "cheap"}]
                },
                "by-cost": {
                    "strategy": "cost",
                    "deployments": [
                        {"provider": "p1", "model": "dear", "input_usd_per_million": 10, "output_usd_per_million": 30},
                        {"provider": "p2", "model": "cheap", "input_usd_per_million": 1, "output_usd_per_million": 2},
                    ],
                },
            },
            "router": {
                "max_attempts": 2,
                "retry_backoff_s": 0.0,
                "unhealthy_after_failures": 2,
                "unhealthy_cooldown_s": 0.3,
            },
            "metering": {"flush_interval_s": 0.05, "spool_path": str(tmp_path / "spool.db")},
        }
    )
    app = build(config)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield router_pb2_grpc.RouterServiceStub(channel), providers
    finally:
        await channel.close()
        await app.stop(0)
        for server in servers:
            await server.stop(0)


def _chat(model: str, strategy: int = 0, allow: tuple[str, ...] = ()) -> router_pb2.ChatRequest:
    request = chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")], max_tokens=10
    )
    request.gateway.strategy = strategy  # type: ignore[assignment]
    request.gateway.allow_providers.extend(allow)
    return router_pb2.ChatRequest(completion=request)


def _md(key: str = KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"), ("x-request-id", "req-s"))


async def test_a_request_chooses_its_strategy_and_the_answer_says_which_deployment_and_why(
    router: tuple[router_pb2_grpc.RouterServiceAsyncStub, FakeProviders],
) -> None:
    stub, providers = router
    ordered = await stub.Chat(_chat("pick"), metadata=_md())
    assert ordered.completion.route == "p1:dear; strategy=ordered"
    cost = await stub.Chat(_chat("pick", chat_pb2.ROUTING_STRATEGY_COST), metadata=_md())
    assert cost.completion.route == "p2:cheap; strategy=cost"
    assert providers.attempts == ["p1:dear", "p2:cheap"]
    # The alias's own strategy, and a request narrowing it to the dearer provider.
    assert (await stub.Chat(_chat("by-cost"), metadata=_md())).completion.route == "p2:cheap; strategy=cost"
    narrowed = await stub.Chat(_chat("by-cost", allow=("p1",)), metadata=_md())
    assert narrowed.completion.route == "p1:dear; strategy=cost"
    # Streams carry the route on their first chunk.
    stream = stub.StreamChat(
        router_pb2.StreamChatRequest(completion=_chat("pick", chat_pb2.ROUTING_STRATEGY_COST).completion),
        metadata=_md(),
    )
    chunks = [item.chunk async for item in stream]
    assert chunks[0].route == "p2:cheap; strategy=cost" and not chunks[1].route


async def test_allow_providers_cannot_widen_the_keys_allowlist(
    router: tuple[router_pb2_grpc.RouterServiceAsyncStub, FakeProviders],
) -> None:
    stub, providers = router
    # The limited key may use p2 only: asking for p1 leaves nothing, and nothing is sent.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(_chat("pick", allow=("p1",)), metadata=_md(LIMITED_KEY))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = GatewayError.from_rpc_error(info.value)
    assert error.metadata["param"] == ALLOW_PROVIDERS_PARAM and "allow_providers" in error.message
    assert providers.attempts == []
    answer = await stub.Chat(_chat("pick", chat_pb2.ROUTING_STRATEGY_ORDERED), metadata=_md(LIMITED_KEY))
    assert answer.completion.route == "p2:cheap; strategy=ordered"
    assert error.reason == Reason.INVALID_REQUEST


async def test_an_open_breaker_is_skipped_until_one_probe_at_a_time_tries_it(
    router: tuple[router_pb2_grpc.RouterServiceAsyncStub, FakeProviders],
) -> None:
    stub, providers = router
    for _ in range(2):
        await stub.Chat(_chat("flaky"), metadata=_md())
    assert providers.attempts == ["p1:fail-503", "p2:cheap"] * 2
    providers.attempts.clear()
    answer = await stub.Chat(_chat("flaky"), metadata=_md())
    assert providers.attempts == ["p2:cheap"] and answer.completion.route == "p2:cheap; strategy=ordered"
    # After the cooldown, of every burst of concurrent requests at most one probes; the probe fails
    # and the breaker opens again, so probes stay rare.
    probes = 0
    async with asyncio.timeout(10):
        while probes < 2:
            providers.attempts.clear()
            await asyncio.gather(*(stub.Chat(_chat("flaky"), metadata=_md()) for _ in range(5)))
            burst = providers.attempts.count("p1:fail-503")
            assert burst <= 1 and providers.attempts.count("p2:cheap") == 5
            probes += burst
            await asyncio.sleep(0.05)


class _FakeStream:
    def __init__(self, items: list[providers_pb2.StreamChatResponse], clock: Clock) -> None:
        self._items = items
        self._clock = clock
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        return self._run()

    async def _run(self) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        for item in self._items:
            self._clock.now += 0.25  # each chunk takes a quarter of a second
            yield item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class _FakeStub:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.release = asyncio.Event()
        self.streams: list[_FakeStream] = []

    async def Chat(self, request: providers_pb2.ChatRequest, **_: object) -> providers_pb2.ChatResponse:
        await self.release.wait()
        self.clock.now += 1.5
        return providers_pb2.ChatResponse()

    def StreamChat(self, request: providers_pb2.StreamChatRequest, **_: object) -> _FakeStream:
        stream = _FakeStream([providers_pb2.StreamChatResponse()] * 3, self.clock)
        self.streams.append(stream)
        return stream


async def test_the_router_observes_time_to_first_token_and_attempts_in_flight() -> None:
    clock = Clock()
    stats = RouteStats(clock=clock)
    stub = _FakeStub(clock)
    providers = ObservedProviders(stub, stats, clock)  # type: ignore[arg-type]
    a = Candidate("p1", "a")
    target = providers_pb2.Target(provider="p1", model="a")
    calls = [asyncio.create_task(providers.Chat(providers_pb2.ChatRequest(target=target))) for _ in range(2)]
    await asyncio.sleep(0)
    assert stats.in_flight(a) == 2
    stub.release.set()
    await asyncio.gather(*calls)
    assert stats.in_flight(a) == 0 and stats.latency(a) == pytest.approx(1.5, abs=0.1)
    # A stream is in flight until it ends or is cancelled; its first chunk is its latency.
    b = Candidate("p2", "b")
    stream = providers.StreamChat(
        providers_pb2.StreamChatRequest(target=providers_pb2.Target(provider="p2", model="b"))
    )
    assert stats.in_flight(b) == 1
    chunks = aiter(stream)
    await anext(chunks)
    assert stats.latency(b) == pytest.approx(0.25)
    stream.cancel()
    stream.cancel()
    assert stats.in_flight(b) == 0 and stub.streams[0].cancelled
