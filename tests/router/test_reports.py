"""The router's pieces for AI Gateway's observability: the cost trailer, redaction before the spool,
GetCosts and GetPromptLog scoped to the caller's tenant, and the prompt logging switch."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from gateway.auth.v1 import auth_pb2
from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2
from services.router.orchestrator import _prompt_log
from services.router.servicer import COST_TRAILER
from tests.router.test_orchestration import LOGGED_KEY, MD, READER_KEY, Rig, _request, _until, rig

__all__ = ["rig"]  # the fixture, shared with the orchestration tests


async def test_the_actual_cost_comes_back_in_trailers(rig: Rig) -> None:
    """Chat and StreamChat end with x-gateway-cost-usd: the settled cost, in USD."""
    call = rig.router.Chat(router_pb2.ChatRequest(completion=_request("fallback")), metadata=MD)
    response = await call
    usage = response.completion.usage
    expected = (usage.prompt_tokens * 2 + usage.completion_tokens * 4) / 1_000_000
    assert float(dict(await call.trailing_metadata())[COST_TRAILER]) == pytest.approx(expected, abs=1e-6)
    stream = rig.router.StreamChat(router_pb2.StreamChatRequest(completion=_request("fallback")), metadata=MD)
    _ = [item async for item in stream]
    assert float(dict(await stream.trailing_metadata())[COST_TRAILER]) > 0


async def test_prompt_logs_are_redacted_before_they_leave_the_router(rig: Rig) -> None:
    """The event the router spools and ships carries no sk- key or bearer token."""
    secret = "sk-proj-abcdefghijklmnop"
    request = chat_pb2.ChatCompletionRequest(
        model="p2:ok",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=f"use {secret} and Bearer abc.def")],
        max_tokens=10,
    )
    metadata = (("authorization", f"Bearer {LOGGED_KEY}"),)
    await rig.router.Chat(router_pb2.ChatRequest(completion=request), metadata=metadata)
    await _until(lambda: any(e.HasField("prompt_log") for e in rig.metering.events))
    logged = next(e for e in rig.metering.events if e.HasField("prompt_log"))
    assert secret not in logged.prompt_log.request_json
    assert "abc.def" not in logged.prompt_log.request_json
    assert "[REDACTED]" in logged.prompt_log.request_json


async def test_costs_are_read_for_the_callers_tenant_only(rig: Rig) -> None:
    """GetCosts asks metering for the principal's tenant, grouped by key; another tenant is refused."""
    reader = (("authorization", f"Bearer {READER_KEY}"),)
    response = await rig.router.GetCosts(router_pb2.GetCostsRequest(), metadata=reader)
    assert [(c.tenant_id, c.requests) for c in response.costs] == [("t1", 3)]
    query = rig.metering.queries[-1]
    assert (query.tenant_id, query.group_by) == ("t1", 2)  # GROUP_BY_KEY
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await rig.router.GetCosts(router_pb2.GetCostsRequest(tenant_id="t2"), metadata=reader)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as no_scope:
        await rig.router.GetCosts(router_pb2.GetCostsRequest(), metadata=MD)
    assert no_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("limit", [0, 1001, -5])
async def test_prompt_log_limit_is_bounded_before_metering(rig: Rig, limit: int) -> None:
    reader = (("authorization", f"Bearer {READER_KEY}"),)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.router.GetPromptLog(router_pb2.GetPromptLogRequest(limit=limit), metadata=reader)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("mode", "tenant_asks", "logged"),
    [("policy", True, True), ("policy", False, False), ("all", False, True), ("off", True, False)],
)
def test_the_global_switch_and_the_tenant_policy(mode: str, tenant_asks: bool, logged: bool) -> None:
    """``all`` logs every tenant, ``off`` none, ``policy`` those whose policy sets log_prompts."""
    principal = auth_pb2.Principal(policy=auth_pb2.Policy(log_prompts=tenant_asks))
    admission = SimpleNamespace(principal=principal)
    result = _prompt_log(admission, _request("m"), mode)  # type: ignore[arg-type]
    assert (result is not None) == logged
