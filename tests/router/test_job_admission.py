"""The orchestrator's hooks for async jobs: admission without the call (reserve-then-release, no
usage written, no provider called), and a run under an already-resolved principal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import auth_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.config import GatewayConfig, LimitsConfig
from gateway_common.errors import GatewayError
from services.router.background import BackgroundTasks
from services.router.orchestrator import CallContext, Orchestrator
from services.router.usage_spool import UsageSpool
from tests.router.test_usage_admission import FakeAuth, FakeProviders, _no_headers, _request


class CountingRateLimit:
    """Allows (or refuses) everything; keeps what was acquired and settled."""

    def __init__(self, allow: bool = True) -> None:
        self.allow = allow
        self.acquired: list[ratelimit_pb2.AcquireRequest] = []
        self.settled: list[ratelimit_pb2.SettleRequest] = []

    async def Acquire(self, request: ratelimit_pb2.AcquireRequest, **options: Any) -> ratelimit_pb2.AcquireResponse:
        self.acquired.append(request)
        return ratelimit_pb2.AcquireResponse(allowed=self.allow)

    async def Settle(self, request: ratelimit_pb2.SettleRequest, **options: Any) -> ratelimit_pb2.SettleResponse:
        self.settled.append(request)
        return ratelimit_pb2.SettleResponse()


class RefusingAuth:
    async def authenticate(self, api_key: str, request_id: str) -> auth_pb2.Principal:
        raise AssertionError("a resolved principal must not be authenticated again")


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[UsageSpool]:
    opened = UsageSpool(tmp_path / "spool.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def _orchestrator(
    spool: UsageSpool, auth: object, ratelimit: CountingRateLimit, background: BackgroundTasks
) -> Orchestrator:
    config = GatewayConfig(limits=LimitsConfig(requests_per_minute=100))
    return Orchestrator(config, auth, ratelimit, FakeProviders(spool), spool, background)  # type: ignore[arg-type]


async def test_check_chat_reserves_and_releases_and_writes_no_usage(spool: UsageSpool) -> None:
    ratelimit, background = CountingRateLimit(), BackgroundTasks()
    orchestrator = _orchestrator(spool, FakeAuth(), ratelimit, background)
    request = _request()
    principal = await orchestrator.check_chat(request, CallContext(api_key="k", request_id="job_1"))
    await background.drain()
    assert (principal.tenant_id, principal.key_id) == ("acme", "k1")
    assert len(ratelimit.acquired) == 1
    [settle] = ratelimit.settled
    assert settle.reservation_id == ratelimit.acquired[0].reservation_id and settle.actual == ratelimit_pb2.Amounts()
    assert await spool.counts() == (0, 0)


async def test_check_chat_refuses_as_chat_would(spool: UsageSpool) -> None:
    ratelimit, background = CountingRateLimit(allow=False), BackgroundTasks()
    orchestrator = _orchestrator(spool, FakeAuth(), ratelimit, background)
    with pytest.raises(GatewayError) as checked:
        await orchestrator.check_chat(_request(), CallContext(api_key="k", request_id="job_1"))
    with pytest.raises(GatewayError) as called:
        await orchestrator.chat(_request(), CallContext(api_key="k", request_id="r"), _no_headers)
    assert checked.value.code == called.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert checked.value.message == called.value.message
    await asyncio.wait_for(background.drain(), 5)
    assert await spool.counts() == (0, 0)


async def test_a_run_under_a_resolved_principal_is_not_authenticated_again(spool: UsageSpool) -> None:
    ratelimit, background = CountingRateLimit(), BackgroundTasks()
    orchestrator = _orchestrator(spool, RefusingAuth(), ratelimit, background)
    principal = auth_pb2.Principal(tenant_id="acme", key_id="k9", scopes=["chat"])
    call = CallContext(api_key="", request_id="job_2", principal=principal)
    completion = await orchestrator.chat(_request(), call, _no_headers)
    assert completion.usage.completion_tokens == 4
    assert await spool.counts() == (0, 1)
