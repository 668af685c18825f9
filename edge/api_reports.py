"""AI Gateway's observability routes: ``GET /api/costs``, ``/api/costs/{key}``, ``/api/prompt-log``.

Translation only: auth says whether the key is an admin's (it lists the tenants only for one), the
router decides whose data the key may see (its tenant, or the one an admin names), and metering
holds the data. Numbers are JSON numbers; cost is in USD.
"""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import Response

from edge.openai_api import _dumps, call_metadata, error_response, rpc_error_response
from edge.state import EdgeState
from gateway.auth.v1 import auth_pb2
from gateway.router.v1 import router_pb2
from gateway_common.errors import invalid_argument

router = APIRouter()

DEFAULT_PROMPT_LOG_LIMIT = 100
MAX_PROMPT_LOG_LIMIT = 1000


def _cost_json(cost: router_pb2.KeyCost) -> dict[str, Any]:
    return {
        "key": cost.key_id,
        "tenant": cost.tenant_id,
        "requests": cost.requests,
        "prompt_tokens": cost.prompt_tokens,
        "completion_tokens": cost.completion_tokens,
        "total_tokens": cost.prompt_tokens + cost.completion_tokens,
        "cost_usd": cost.cost_micro_usd / 1_000_000,
    }


async def _admin_tenants(request: Request) -> list[str] | None:
    """Every tenant when the caller's key is an admin key (auth decides), else None."""
    state: EdgeState = request.app.state.edge
    try:
        listed = await state.auth.ListTenants(auth_pb2.ListTenantsRequest(), metadata=call_metadata(request))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            # Not an admin (or no valid key): the router answers for the caller's own tenant, or says why not.
            return None
        raise
    return sorted(t.tenant_id for t in listed.tenants)


async def _costs(request: Request, key_id: str) -> list[router_pb2.KeyCost]:
    """The rows of the caller's tenant; of every tenant for an admin key (one router call each)."""
    state: EdgeState = request.app.state.edge
    tenants = await _admin_tenants(request)
    rows: list[router_pb2.KeyCost] = []
    for tenant in tenants if tenants is not None else [""]:
        try:
            response = await state.router.GetCosts(
                router_pb2.GetCostsRequest(key_id=key_id, tenant_id=tenant), metadata=call_metadata(request)
            )
        except grpc.aio.AioRpcError as exc:
            # An admin asking for one key: a tenant without it is not the answer, the others may be.
            if tenants is not None and key_id and exc.code() == grpc.StatusCode.NOT_FOUND:
                continue
            raise
        rows.extend(response.costs)
    if tenants is not None and key_id and not rows:
        await state.router.GetCosts(router_pb2.GetCostsRequest(key_id=key_id), metadata=call_metadata(request))
    return rows


@router.get("/api/costs")
async def list_costs(request: Request) -> Response:
    """Every key's requests, tokens and cost (USD): the caller's tenant, or all tenants for an admin key."""
    try:
        costs = [_cost_json(c) for c in await _costs(request, "")]
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    return Response(
        _dumps({"object": "list", "data": costs, "total_cost_usd": sum(c["cost_usd"] for c in costs)}),
        media_type="application/json",
    )


@router.get("/api/costs/{key_id}")
async def key_costs(request: Request, key_id: str) -> Response:
    """One key's totals by its id; a key of another tenant is 404, as one that does not exist."""
    try:
        rows = [_cost_json(c) for c in await _costs(request, key_id)]
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    if len(rows) == 1:
        return Response(_dumps(rows[0]), media_type="application/json")
    # An admin key sees the key in each tenant that has it (key ids are unique, so at most one).
    return Response(_dumps({"object": "list", "data": rows}), media_type="application/json")


@router.get("/api/prompt-log")
async def prompt_log(request: Request) -> Response:
    """The caller's tenant's last ``limit`` (1..1000, default 100) logged calls, newest first."""
    raw = request.query_params.get("limit")
    limit = DEFAULT_PROMPT_LOG_LIMIT
    if raw is not None:
        if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_PROMPT_LOG_LIMIT:
            return error_response(
                invalid_argument(f"limit must be an integer from 1 to {MAX_PROMPT_LOG_LIMIT}, not {raw!r}.", "limit")
            )
        limit = int(raw)
    state: EdgeState = request.app.state.edge
    try:
        response = await state.router.GetPromptLog(
            router_pb2.GetPromptLogRequest(limit=limit), metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    entries = [
        {
            "id": e.event_id,
            "request_id": e.request_id,
            "key": e.key_id,
            "model": e.model,
            "time": e.time.ToDatetime().isoformat() + "Z",
            "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens,
            "request_preview": e.request_preview,
            "response_preview": e.response_preview,
        }
        for e in response.entries
    ]
    return Response(_dumps({"object": "list", "data": entries}), media_type="application/json")
