"""The orchestrator and the usage spool: the intent is on disk before a provider is called, the final
event replaces it, every request has its own event id, and a spool that cannot be written stops the
request before it costs anything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import auth_pb2
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2
from gateway.providers.v1 import providers_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError
from services.router.background import BackgroundTasks
from services.router.orchestrator import CallContext, Orchestrator
from services.router.usage_intent import RESTARTED_ERROR_CODE
from services.router.usage_shipper import MAX_BATCH_BYTES
from services.router.usage_spool import UsageSpool


class FakeAuth:
    async def authenticate(self, api_key: str, request_id: str) -> auth_pb2.Principal:
        return auth_pb2.Principal(tenant_id="acme", key_id="k1", scopes=["chat"])


class FakeRateLimit:
    """Allows everything; keeps what was settled."""

    def __init__(self) -> None:
        self.settled: list[ratelimit_pb2.SettleRequest] = []

    async def Acquire(self, request: ratelimit_pb2.AcquireRequest, **options: Any) -> ratelimit_pb2.AcquireResponse:
        return ratelimit_pb2.AcquireResponse(allowed=True)

    async def Settle(self, request: ratelimit_pb2.SettleRequest, **options: Any) -> ratelimit_pb2.SettleResponse:
        self.settled.append(request)
        return ratelimit_pb2.SettleResponse()


class FakeProviders:
    """Answers every chat; notes what the spool held when it was called."""

    def __init__(self, spool: UsageSpool) -> None:
        self.spool = spool
        self.spooled_at_call: list[tuple[int, int]] = []

    async def Chat(self, request: providers_pb2.ChatRequest, **options: Any) -> providers_pb2.ChatResponse:
        self.spooled_at_call.append(await self.spool.counts())
        completion = chat_pb2.ChatCompletion(usage=chat_pb2.Usage(prompt_tokens=3, completion_tokens=4))
        return providers_pb2.ChatResponse(completion=completion)


class UnwritableSpool(UsageSpool):
    async def admit(self, event: metering_pb2.UsageEvent) -> None:
        raise OSError(28, "No space left on device")


async def _no_headers(headers: list[tuple[str, str]]) -> None:
    pass


def _request() -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model="mock:demo", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Hi")], max_tokens=10
    )


def _orchestrator(spool: UsageSpool, providers: FakeProviders, ratelimit: FakeRateLimit | None = None) -> Orchestrator:
    return Orchestrator(
        GatewayConfig(),
        FakeAuth(),  # type: ignore[arg-type]
        ratelimit or FakeRateLimit(),  # type: ignore[arg-type]
        providers,  # type: ignore[arg-type]
        spool,
        BackgroundTasks(),
    )


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[UsageSpool]:
    opened = UsageSpool(tmp_path / "spool.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_the_intent_is_spooled_before_the_provider_is_called_and_replaced_at_the_end(spool: UsageSpool) -> None:
    providers = FakeProviders(spool)
    orchestrator = _orchestrator(spool, providers)

    for _ in range(3):
        await orchestrator.chat(_request(), CallContext(api_key="k", request_id="same-client-id"), _no_headers)

    # Each call found its own intent (and nothing final of its own yet) on disk.
    assert [intents for intents, _ in providers.spooled_at_call] == [1, 1, 1]
    assert await spool.counts() == (0, 3)
    events = [metering_pb2.UsageEvent.FromString(e.payload) for e in await spool.ready(10, MAX_BATCH_BYTES)]
    assert {e.request_id for e in events} == {"same-client-id"}
    assert len({e.event_id for e in events}) == 3
    assert [(e.outcome, e.prompt_tokens, e.completion_tokens, e.error_code) for e in events] == [
        (metering_pb2.OUTCOME_SUCCESS, 3, 4, "")
    ] * 3


async def test_an_intent_carries_the_estimate_and_the_received_time(
    spool: UsageSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Dying(FakeProviders):
        async def Chat(self, request: providers_pb2.ChatRequest, **options: Any) -> providers_pb2.ChatResponse:
            raise SystemExit  # the process "dies" with the request in flight...

    # ...so the final event is never written, as with a SIGKILL.
    monkeypatch.setattr(spool, "complete", lambda event: None)
    orchestrator = _orchestrator(spool, Dying(spool))
    with pytest.raises(SystemExit):
        await orchestrator.chat(_request(), CallContext(api_key="k", request_id="r1"), _no_headers)
    await spool.close()

    reopened = UsageSpool(spool.path)
    assert await reopened.open() == 1
    [event] = [metering_pb2.UsageEvent.FromString(e.payload) for e in await reopened.ready(10, MAX_BATCH_BYTES)]
    await reopened.close()
    assert (event.outcome, event.error_code, event.usage_estimated) == (
        metering_pb2.OUTCOME_ERROR,
        RESTARTED_ERROR_CODE,
        True,
    )
    assert (event.tenant_id, event.key_id, event.model, event.operation) == ("acme", "k1", "mock:demo", "chat")
    assert event.prompt_tokens > 0 and event.completion_tokens == 10
    assert event.HasField("time") and event.event_id


async def test_a_spool_that_cannot_be_written_refuses_the_request_before_the_provider(tmp_path: Path) -> None:
    spool = UnwritableSpool(tmp_path / "spool.db")
    await spool.open()
    providers, ratelimit = FakeProviders(spool), FakeRateLimit()
    orchestrator = _orchestrator(spool, providers, ratelimit)
    try:
        with pytest.raises(GatewayError) as caught:
            await orchestrator.chat(_request(), CallContext(api_key="k", request_id="r1"), _no_headers)
        counts = await spool.counts()
        await orchestrator._background.drain()
    finally:
        await spool.close()

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.retryable
    assert providers.spooled_at_call == []
    # The reservation is returned whole, and what was spooled instead is an event without usage.
    assert [(s.actual.requests, s.actual.tokens, s.actual.cost_micro_usd) for s in ratelimit.settled] == [(1, 0, 0)]
    assert counts == (0, 1)
