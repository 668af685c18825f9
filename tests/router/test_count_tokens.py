"""RouterService.CountTokens: authenticated, checked like admission, and touching nothing else.

Against the in-process router of the orchestration tests (fake auth, ratelimit, providers and
metering over real gRPC): a count reserves no quota, reaches no provider and records no usage.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gateway.router.v1 import router_pb2
from gateway_common.tokens import prompt_token_ceiling
from tests.router.test_orchestration import LIMITED_KEY, MD, Rig, _request, rig

__all__ = ["rig"]  # the fixture, shared with the orchestration tests


async def test_the_count_is_the_admission_ceiling_and_nothing_is_reserved_called_or_metered(rig: Rig) -> None:
    request = _request("p2:ok")
    response = await rig.router.CountTokens(router_pb2.CountTokensRequest(completion=request), metadata=MD)
    assert response.input_tokens == prompt_token_ceiling(request) > 0
    assert response.method == router_pb2.TOKEN_COUNT_METHOD_CEILING
    await asyncio.sleep(0.2)  # several metering flush intervals: anything recorded would be there
    assert rig.ratelimit.acquired == [] and rig.providers.attempts == [] and rig.metering.events == []
    assert rig.auth.calls == 1


@pytest.mark.parametrize(
    ("metadata", "model", "code"),
    [
        ((), "p2:ok", grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer gw-wrong"),), "p2:ok", grpc.StatusCode.UNAUTHENTICATED),
        (MD, "nosuch:model", grpc.StatusCode.NOT_FOUND),
        ((("authorization", f"Bearer {LIMITED_KEY}"),), "p1:ok", grpc.StatusCode.PERMISSION_DENIED),
        (MD, "bad\x00model", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_refused_as_admission_would_refuse(
    rig: Rig, metadata: tuple[tuple[str, str], ...], model: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.router.CountTokens(router_pb2.CountTokensRequest(completion=_request(model)), metadata=metadata)
    assert raised.value.code() == code
    assert rig.ratelimit.acquired == [] and rig.providers.attempts == []


async def test_an_empty_conversation_is_invalid(rig: Rig) -> None:
    request = _request("p2:ok")
    del request.messages[:]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.router.CountTokens(router_pb2.CountTokensRequest(completion=request), metadata=MD)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
