"""The router against in-process fakes of auth, ratelimit, providers and metering, over real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

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
from services.router.server import build

KEY = "gw-test-key"
LIMITED_KEY = "gw-limited-key"
LOGGED_KEY = "gw-logged-key"
READER_KEY = "gw-reader-key"


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, context: Any) -> auth_pb2.AuthenticateResponse:
        self.calls += 1
        limits = auth_pb2.Limits(
            quotas=[quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_MINUTE, limit=100)]
        )
        if request.api_key == KEY:
            principal = auth_pb2.Principal(tenant_id="t1", key_id="k1", scopes=["chat"], key_limits=limits)
        elif request.api_key == LIMITED_KEY:
            principal = auth_pb2.Principal(
                tenant_id="t1", key_id="k2", scopes=["chat"], allowed_models=["p2:*"], key_limits=limits
            )
        elif request.api_key == READER_KEY:
            principal = auth_pb2.Principal(tenant_id="t1", key_id="k4", scopes=["usage:read"])
        elif request.api_key == LOGGED_KEY:
            principal = auth_pb2.Principal(
                tenant_id="t2",
                key_id="k3",
                scopes=["chat"],
                key_limits=limits,
                policy=auth_pb2.Policy(log_prompts=True),
            )
        else:
            raise GatewayError(grpc.StatusCode.UNAUTHENTICATED, Reason.INVALID_API_KEY, "Incorrect API key provided.")
        return auth_pb2.AuthenticateResponse(principal=principal, cache_ttl_seconds=2)


class FakeRateLimit(ratelimit_pb2_grpc.RateLimitServiceServicer):
    def __init__(self) -> None:
        self.acquired: list[ratelimit_pb2.AcquireRequest] = []
        self.settled: list[ratelimit_pb2.SettleRequest] = []
        self.refuse = False
        self.hold: asyncio.Event | None = None  # when set, Acquire answers only once the event is set

    async def Acquire(self, request: ratelimit_pb2.AcquireRequest, context: Any) -> ratelimit_pb2.AcquireResponse:
        self.acquired.append(request)
        if self.hold is not None:
            await self.hold.wait()
        quota = request.limits[-1].quotas[0]
        status = ratelimit_pb2.QuotaStatus(
            descriptor=request.limits[-1].descriptor,
            quota=quota,
            remaining=0 if self.refuse else 99,
            exceeded=self.refuse,
        )
        status.reset_after.seconds = 42
        response = ratelimit_pb2.AcquireResponse(allowed=not self.refuse, statuses=[status])
        if self.refuse:
            response.retry_after.seconds = 42
        return response

    async def Settle(self, request: ratelimit_pb2.SettleRequest, context: Any) -> ratelimit_pb2.SettleResponse:
        self.settled.append(request)
        return ratelimit_pb2.SettleResponse(found=True)


def _upstream_error(code: grpc.StatusCode, retryable: bool) -> GatewayError:
    return GatewayError(
        code,
        Reason.UPSTREAM_ERROR,
        f"upstream said {code.name}",
        {"retryable": str(retryable).lower(), "upstream_code": "boom"},
    )


def _chunk(text: str | None = None, usage: bool = False) -> providers_pb2.StreamChatResponse:
    chunk = chat_pb2.ChatCompletionChunk(id="c1", model="up-model")
    if usage:
        chunk.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10))
    else:
        chunk.choices.add(index=0).delta.content = text or ""
    return providers_pb2.StreamChatResponse(chunk=chunk)


@dataclass
class FakeProviders(providers_pb2_grpc.ProviderServiceServicer):
    attempts: list[str] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def Chat(self, request: providers_pb2.ChatRequest, context: Any) -> providers_pb2.ChatResponse:
        target = f"{request.target.provider}:{request.target.model}"
        self.attempts.append(target)
        if request.target.model == "fail-503":
            raise _upstream_error(grpc.StatusCode.UNAVAILABLE, True)
        if request.target.model == "fail-400":
            raise _upstream_error(grpc.StatusCode.INVALID_ARGUMENT, False)
        if request.target.model == "fail-wait":  # retryable, after the upstream's Retry-After
            error = _upstream_error(grpc.StatusCode.UNAVAILABLE, True)
            error.retry_after_s = 2.0
            raise error
        if request.target.model == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request.target.model == "no-n":
            error = _upstream_error(grpc.StatusCode.INVALID_ARGUMENT, False)
            error.reason = Reason.UNSUPPORTED_FIELD
            raise error
        completion = chat_pb2.ChatCompletion(id="x", model="up-model", provider=request.target.provider)
        choice = completion.choices.add(index=0, finish_reason=chat_pb2.FINISH_REASON_STOP)
        choice.message.role = chat_pb2.ROLE_ASSISTANT
        choice.message.text = "hello"
        completion.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7))
        return providers_pb2.ChatResponse(completion=completion)

    async def StreamChat(
        self, request: providers_pb2.StreamChatRequest, context: Any
    ) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        self.attempts.append(f"{request.target.provider}:{request.target.model}")
        model = request.target.model
        if model == "fail-503":
            raise _upstream_error(grpc.StatusCode.UNAVAILABLE, True)
        yield _chunk("one ")
        if model == "break-mid":
            raise _upstream_error(grpc.StatusCode.UNAVAILABLE, True)
        if model == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        yield _chunk("two")
        yield _chunk(usage=True)


class FakeMetering(metering_pb2_grpc.MeteringServiceServicer):
    def __init__(self) -> None:
        self.events: list[metering_pb2.UsageEvent] = []
        self.queries: list[metering_pb2.QueryUsageRequest] = []

    async def QueryUsage(
        self, request: metering_pb2.QueryUsageRequest, context: Any
    ) -> metering_pb2.QueryUsageResponse:
        self.queries.append(request)
        return metering_pb2.QueryUsageResponse(rows=[metering_pb2.UsageRow(group=request.tenant_id, requests=3)])

    async def RecordEvents(
        self, request: metering_pb2.RecordEventsRequest, context: Any
    ) -> metering_pb2.RecordEventsResponse:
        self.events.extend(request.events)
        return metering_pb2.RecordEventsResponse(recorded=len(request.events))


@dataclass
class Rig:
    router: router_pb2_grpc.RouterServiceAsyncStub
    auth: FakeAuth
    ratelimit: FakeRateLimit
    providers: FakeProviders
    metering: FakeMetering


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    auth, ratelimit, providers, metering = FakeAuth(), FakeRateLimit(), FakeProviders(), FakeMetering()
    fakes = {
        "auth": ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, auth, "a"),
        "ratelimit": ServiceRegistration(ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, ratelimit, "r"),
        "providers": ServiceRegistration(providers_pb2_grpc.add_ProviderServiceServicer_to_server, providers, "p"),
        "metering": ServiceRegistration(metering_pb2_grpc.add_MeteringServiceServicer_to_server, metering, "m"),
    }
    servers: dict[str, GrpcServer] = {}
    addresses: dict[str, dict[str, str]] = {}
    for name, registration in fakes.items():
        server = GrpcServer("127.0.0.1:0", [registration])
        port = await server.start()
        servers[name] = server
        addresses[name] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    config = GatewayConfig.model_validate(
        {
            "services": {**addresses, "router": {"listen": "127.0.0.1:0", "address": "unused"}},
            "providers": {
                "p1": {"type": "openai_compatible", "base_url": "http://x"},
                "p2": {"type": "openai_compatible", "base_url": "http://y"},
            },
            "models": {
                "fallback": {
                    "deployments": [
                        {"provider": "p1", "model": "fail-503"},
                        {"provider": "p2", "model": "ok", "input_usd_per_million": 2, "output_usd_per_million": 4},
                    ]
                },
                "stream-fallback": {
                    "deployments": [{"provider": "p1", "model": "fail-503"}, {"provider": "p2", "model": "ok"}]
                },
                "limited": {
                    "deployments": [{"provider": "p2", "model": "ok"}],
                    "limits": {"requests_per_minute": 5, "max_concurrent_requests": 2},
                },
                "unsupported": {
                    "deployments": [{"provider": "p1", "model": "no-n"}, {"provider": "p2", "model": "ok"}]
                },
                "mid-break": {
                    "deployments": [{"provider": "p1", "model": "break-mid"}, {"provider": "p2", "model": "ok"}]
                },
            },
            "router": {"max_attempts": 3, "retry_backoff_s": 0.0},
            "metering": {"flush_interval_s": 0.05, "spool_path": str(tmp_path / "usage-spool.db")},
        }
    )
    app = build(config)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Rig(router_pb2_grpc.RouterServiceStub(channel), auth, ratelimit, providers, metering)
    finally:
        await channel.close()
        await app.stop(0)
        for server in servers.values():
            await server.stop(0)


def _request(model: str) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi there")], max_tokens=10
    )


MD = (("authorization", f"Bearer {KEY}"), ("x-request-id", "req-1"))


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def _details(error: grpc.aio.AioRpcError) -> GatewayError:
    return GatewayError.from_rpc_error(error)


async def test_fallback_to_next_deployment_and_settle_actual_usage(rig: Rig) -> None:
    call = rig.router.Chat(router_pb2.ChatRequest(completion=_request("fallback")), metadata=MD)
    response = await call
    assert response.completion.choices[0].message.text == "hello"
    assert rig.providers.attempts == ["p1:fail-503", "p2:ok"]
    headers = dict(await call.initial_metadata())
    assert headers["x-ratelimit-remaining-requests"] == "99"
    assert headers["x-ratelimit-reset-requests"] == "42s"
    await _until(lambda: rig.ratelimit.settled and rig.metering.events)
    # Reserved at the dearer deployment (p2: 2 and 4 USD per million tokens), not the first one (free).
    reserved = rig.ratelimit.acquired[0].amounts
    assert reserved.cost_micro_usd == 2 * (reserved.tokens - 10) + 4 * 10
    settled = rig.ratelimit.settled[0]
    assert settled.reservation_id.startswith("req-1:")
    assert settled.reservation_id == rig.ratelimit.acquired[0].reservation_id
    # 5 prompt tokens at $2/M plus 2 completion tokens at $4/M: 18 micro-USD.
    assert (settled.actual.requests, settled.actual.tokens, settled.actual.cost_micro_usd) == (1, 7, 18)
    event = rig.metering.events[0]
    assert (event.request_id, event.tenant_id, event.key_id, event.provider, event.attempts) == (
        "req-1",
        "t1",
        "k1",
        "p2",
        2,
    )
    assert event.outcome == metering_pb2.OUTCOME_SUCCESS


async def test_non_retryable_error_is_not_retried(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p1:fail-400")), metadata=MD)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rig.providers.attempts == ["p1:fail-400"]
    assert _details(info.value).metadata["upstream_code"] == "boom"


async def test_retryable_error_is_retried_up_to_max_attempts(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p1:fail-503")), metadata=MD)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rig.providers.attempts == ["p1:fail-503"] * 3
    assert _details(info.value).metadata["attempts"].count("UNAVAILABLE") == 3
    await _until(lambda: rig.metering.events)
    assert rig.metering.events[0].outcome == metering_pb2.OUTCOME_ERROR


async def test_refused_request_never_reaches_a_provider(rig: Rig) -> None:
    rig.ratelimit.refuse = True
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p1:ok")), metadata=MD)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    error = _details(info.value)
    assert error.reason == Reason.RATE_LIMITED and error.retry_after_s == 42
    assert error.quota_violations and "requests/minute" in error.quota_violations[0].subject
    assert dict(info.value.initial_metadata())["x-ratelimit-remaining-requests"] == "0"
    assert rig.providers.attempts == []


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (chat_pb2.ChatCompletionRequest(model="p1:ok"), "messages"),
        (chat_pb2.ChatCompletionRequest(model="p1:ok", messages=[chat_pb2.Message(text="x")]), "messages[0].role"),
        (
            chat_pb2.ChatCompletionRequest(model="p1:ok", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER)]),
            "messages[0].content",
        ),
    ],
)
async def test_invalid_requests_use_no_quota(rig: Rig, request_: chat_pb2.ChatCompletionRequest, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=request_), metadata=MD)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(info.value).field_violations[0].field == field
    assert rig.ratelimit.acquired == [] and rig.providers.attempts == []


async def test_unknown_model_and_bad_key_and_allowlist(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("nope:x")), metadata=MD)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(
            router_pb2.ChatRequest(completion=_request("p1:ok")), metadata=(("authorization", "Bearer wrong"),)
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "wrong" not in (info.value.details() or "")
    limited = (("authorization", f"Bearer {LIMITED_KEY}"),)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p1:ok")), metadata=limited)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The alias keeps only the deployment the key may use.
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("fallback")), metadata=limited)
    assert rig.providers.attempts == ["p2:ok"]
    assert rig.ratelimit.acquired and all(a.limits for a in rig.ratelimit.acquired)


async def test_auth_answers_are_cached(rig: Rig) -> None:
    for _ in range(3):
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p2:ok")), metadata=MD)
    assert rig.auth.calls == 1


async def test_stream_falls_back_before_the_first_chunk_and_continues_after(rig: Rig) -> None:
    stream = rig.router.StreamChat(router_pb2.StreamChatRequest(completion=_request("stream-fallback")), metadata=MD)
    texts = [item.chunk.choices[0].delta.content async for item in stream if item.chunk.choices]
    assert texts == ["one ", "two"]
    assert rig.providers.attempts == ["p1:fail-503", "p2:ok"]

    # After the first chunk a broken stream is not restarted but continued (tests/failover/).
    rig.providers.attempts.clear()
    stream = rig.router.StreamChat(router_pb2.StreamChatRequest(completion=_request("mid-break")), metadata=MD)
    received = [item async for item in stream]
    assert [i.chunk.choices[0].delta.content for i in received if i.chunk.choices] == ["one ", "one ", "two"]
    assert rig.providers.attempts == ["p1:break-mid", "p2:ok"]


async def test_stream_usage_is_settled(rig: Rig) -> None:
    stream = rig.router.StreamChat(router_pb2.StreamChatRequest(completion=_request("p2:ok")), metadata=MD)
    items = [item async for item in stream]
    assert items[-1].chunk.usage.total_tokens == 10
    await _until(lambda: rig.ratelimit.settled and rig.metering.events)
    assert rig.ratelimit.settled[0].actual.tokens == 10
    assert rig.metering.events[0].streamed and rig.metering.events[0].HasField("time_to_first_chunk")


async def test_cancelling_a_stream_cancels_the_provider_call_and_meters_it(rig: Rig) -> None:
    stream = rig.router.StreamChat(router_pb2.StreamChatRequest(completion=_request("p2:hang")), metadata=MD)
    first = await anext(aiter(stream))
    assert first.chunk.choices[0].delta.content == "one "
    stream.cancel()
    await asyncio.wait_for(rig.providers.cancelled.wait(), 5)
    await _until(lambda: rig.metering.events and rig.ratelimit.settled)
    event = rig.metering.events[0]
    assert event.outcome == metering_pb2.OUTCOME_CANCELLED
    assert event.completion_tokens >= 1 and event.usage_estimated


async def test_rich_error_details_reach_the_client(rig: Rig) -> None:
    rig.ratelimit.refuse = True
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p1:ok")), metadata=MD)
    trailing = dict(info.value.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    kinds = {d.type_url.rsplit("/", 1)[-1] for d in status.details}
    assert {"google.rpc.ErrorInfo", "google.rpc.RetryInfo", "google.rpc.QuotaFailure"} <= kinds
    assert error_details_pb2.QuotaFailure.DESCRIPTOR.full_name in kinds


def test_attempt_sequence() -> None:
    from services.router.attempts import AttemptPolicy, Attempts
    from services.router.planner import Candidate

    def walk(candidates: tuple[Candidate, ...], max_attempts: int) -> list[Candidate]:
        attempts = Attempts(candidates, AttemptPolicy(max_attempts, 0, 0.0, 2.0))
        seen = [attempts.start()]
        while attempts.failed(_upstream_error(grpc.StatusCode.UNAVAILABLE, True)) is not None:
            seen.append(attempts.start())
        return seen

    a, b = Candidate("a", "1"), Candidate("b", "2")
    assert walk((a,), 3) == [a, a, a]
    assert walk((a, b), 3) == [a, b, b]
    assert walk((a, b), 1) == [a, b]


async def test_unsupported_field_falls_back_to_a_deployment_that_supports_it(rig: Rig) -> None:
    response = await rig.router.Chat(router_pb2.ChatRequest(completion=_request("unsupported")), metadata=MD)
    assert response.completion.provider == "p2"
    assert rig.providers.attempts == ["p1:no-n", "p2:ok"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p1:no-n")), metadata=MD)
    assert _details(info.value).reason == Reason.UNSUPPORTED_FIELD


async def test_an_unauthenticated_caller_learns_nothing_about_its_body(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.Chat(router_pb2.ChatRequest(completion=chat_pb2.ChatCompletionRequest()), metadata=())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_model_with_limits_adds_a_key_model_descriptor(rig: Rig) -> None:
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("limited")), metadata=MD)
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p2:ok")), metadata=MD)
    with_model, without = rig.ratelimit.acquired
    entries = [[(e.key, e.value) for e in d.descriptor.entries] for d in with_model.limits]
    assert [("tenant", "t1"), ("key", "k1"), ("model", "limited")] in entries
    model_limits = next(d for d in with_model.limits if len(d.descriptor.entries) == 3)
    assert [q.limit for q in model_limits.quotas] == [5] and model_limits.max_concurrent == 2
    assert all(len(d.descriptor.entries) < 3 for d in without.limits)


async def test_prompts_are_logged_only_for_tenants_that_ask(rig: Rig) -> None:
    logged = (("authorization", f"Bearer {LOGGED_KEY}"), ("x-request-id", "req-logged"))
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p2:ok")), metadata=logged)
    stream = rig.router.StreamChat(router_pb2.StreamChatRequest(completion=_request("p2:ok")), metadata=logged)
    _ = [item async for item in stream]
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p2:ok")), metadata=MD)
    await _until(lambda: len(rig.metering.events) == 3)
    unary, streamed, plain = sorted(rig.metering.events, key=lambda e: (e.tenant_id != "t2", e.streamed))
    assert "hi there" in unary.prompt_log.request_json and unary.prompt_log.response_text == "hello"
    assert streamed.prompt_log.response_text == "one two"
    assert not plain.HasField("prompt_log")


async def test_requests_reusing_a_request_id_get_their_own_reservations(rig: Rig) -> None:
    await asyncio.gather(
        *(rig.router.Chat(router_pb2.ChatRequest(completion=_request("p2:ok")), metadata=MD) for _ in range(3))
    )
    assert len({a.reservation_id for a in rig.ratelimit.acquired}) == 3


def test_prompt_log_fields_are_bounded_and_clean() -> None:
    from services.router.orchestrator import _MAX_LOG_FIELD_BYTES, _loggable

    assert _loggable("a\x00b") == "a\ufffdb"
    huge = "é" * _MAX_LOG_FIELD_BYTES
    bounded = _loggable(huge)
    assert len(bounded.encode()) <= _MAX_LOG_FIELD_BYTES
    assert bounded.endswith("more bytes]") and bounded.startswith("éé")
    assert _loggable("short") == "short"


async def test_metrics_count_requests_tokens_cost_rejections_and_upstream_errors(rig: Rig) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "ok": value("gateway_requests_total", operation="chat", model="fallback", provider="p2", outcome="success"),
        "cost": value("gateway_cost_micro_usd_total", model="fallback", provider="p2"),
        "errors": value("gateway_upstream_errors_total", provider="p1", code="UNAVAILABLE"),
        "refused": value("gateway_limit_rejections_total", reason="RATE_LIMITED"),
    }
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("fallback")), metadata=MD)
    rig.ratelimit.refuse = True
    with pytest.raises(grpc.aio.AioRpcError):
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("fallback")), metadata=MD)
    await _until(lambda: rig.metering.events)
    ok = value("gateway_requests_total", operation="chat", model="fallback", provider="p2", outcome="success")
    assert ok == before["ok"] + 1
    assert value("gateway_cost_micro_usd_total", model="fallback", provider="p2") == before["cost"] + 18
    assert value("gateway_upstream_errors_total", provider="p1", code="UNAVAILABLE") == before["errors"] + 1
    assert value("gateway_limit_rejections_total", reason="RATE_LIMITED") == before["refused"] + 1


async def test_usage_is_readable_with_the_scope_and_only_for_the_own_tenant(rig: Rig) -> None:
    reader = (("authorization", f"Bearer {READER_KEY}"),)
    response = await rig.router.GetUsage(
        router_pb2.GetUsageRequest(group_by=metering_pb2.GROUP_BY_MODEL, key_id="k1"), metadata=reader
    )
    assert [(r.group, r.requests) for r in response.rows] == [("t1", 3)]
    query = rig.metering.queries[-1]
    assert (query.tenant_id, query.key_id, query.group_by) == ("t1", "k1", metering_pb2.GROUP_BY_MODEL)
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await rig.router.GetUsage(router_pb2.GetUsageRequest(tenant_id="t2"), metadata=reader)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as no_scope:
        await rig.router.GetUsage(router_pb2.GetUsageRequest(), metadata=MD)
    assert no_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(rig.metering.queries) == 1


async def test_a_failing_deployment_is_tried_last_after_repeated_failures(rig: Rig) -> None:
    for _ in range(3):
        await rig.router.Chat(router_pb2.ChatRequest(completion=_request("fallback")), metadata=MD)
    assert rig.providers.attempts == ["p1:fail-503", "p2:ok"] * 3
    rig.providers.attempts.clear()
    await rig.router.Chat(router_pb2.ChatRequest(completion=_request("fallback")), metadata=MD)
    assert rig.providers.attempts == ["p2:ok"]


async def test_the_reservation_is_the_prompt_ceiling_plus_the_cap_priced_at_the_dearest_deployment(rig: Rig) -> None:
    request = chat_pb2.ChatCompletionRequest(
        model="fallback", n=2, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="héllo")]
    )
    await rig.router.Chat(router_pb2.ChatRequest(completion=request), metadata=MD)

    amounts = rig.ratelimit.acquired[-1].amounts
    prompt = 8 + 8 + 6  # reply priming, one message, six UTF-8 bytes
    assert amounts.tokens == prompt + 2 * 1024  # n choices of the default cap
    # p1:fail-503 is free, p2:ok costs $2/$4 per million: the fallback must fit what was reserved.
    assert amounts.cost_micro_usd == prompt * 2 + 2 * 1024 * 4
