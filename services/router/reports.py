"""RouterService's reads of the ledger for AI Gateway's ``/api/*``: costs per key and the prompt log.

A servicer mixin. The tenant is always the principal's (or the one an admin key names): metering
is never asked an unscoped question by the router.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway.router.v1 import router_pb2
from gateway_common.errors import GatewayError, Reason
from gateway_common.grpc_server import REQUEST_ID_KEY
from services.router import policy
from services.router.orchestrator import CallContext, Orchestrator

Context = grpc.aio.ServicerContext[Any, Any]

MAX_PROMPT_LOG_ENTRIES = 1000


class ReportsServicer:
    """``GetCosts`` and ``GetPromptLog``; the servicer provides the orchestrator and the stubs."""

    _orchestrator: Orchestrator
    _metering: metering_pb2_grpc.MeteringServiceAsyncStub

    def _call(self, context: Context) -> CallContext:
        raise NotImplementedError

    async def GetCosts(self, request: router_pb2.GetCostsRequest, context: Context) -> router_pb2.GetCostsResponse:
        """Per-key totals of the caller's tenant, or of the tenant an admin key names."""
        call = self._call(context)
        principal = await self._orchestrator.authenticate(call)
        tenant = policy.usage_tenant(principal, request.tenant_id)
        response = router_pb2.GetCostsResponse()
        query = metering_pb2.QueryUsageRequest(
            tenant_id=tenant, key_id=request.key_id, group_by=metering_pb2.GROUP_BY_KEY
        )
        try:
            usage = await self._metering.QueryUsage(
                query, timeout=call.time_remaining() or 10.0, metadata=((REQUEST_ID_KEY, call.request_id),)
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.from_rpc_error(exc, "metering") from None
        response.costs.extend(
            router_pb2.KeyCost(
                tenant_id=tenant,
                key_id=row.group,
                requests=row.requests,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                cost_micro_usd=row.cost_micro_usd,
            )
            for row in usage.rows
        )
        if request.key_id and not response.costs:
            # Another tenant's key and a key that never ran look the same: neither is the caller's to see.
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                Reason.INVALID_REQUEST,
                f"No usage is recorded for the key `{request.key_id}` in this tenant.",
                {"param": "key"},
            )
        return response

    async def GetPromptLog(
        self, request: router_pb2.GetPromptLogRequest, context: Context
    ) -> router_pb2.GetPromptLogResponse:
        """The caller's tenant's latest prompt log entries (an admin key reads its own tenant's too)."""
        call = self._call(context)
        principal = await self._orchestrator.authenticate(call)
        policy.require_scope(principal, "usage:read")
        if not 1 <= request.limit <= MAX_PROMPT_LOG_ENTRIES:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_REQUEST,
                f"limit must be between 1 and {MAX_PROMPT_LOG_ENTRIES}, not {request.limit}.",
                {"param": "limit"},
            )
        try:
            logs = await self._metering.QueryPromptLog(
                metering_pb2.QueryPromptLogRequest(tenant_id=principal.tenant_id, limit=request.limit),
                timeout=call.time_remaining() or 10.0,
                metadata=((REQUEST_ID_KEY, call.request_id),),
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.from_rpc_error(exc, "metering") from None
        return router_pb2.GetPromptLogResponse(entries=logs.entries)
