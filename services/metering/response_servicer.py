"""ResponseStoreService over gRPC: protobuf in, :mod:`services.metering.response_store` decides, the store keeps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from gateway.metering.v1 import response_store_pb2, response_store_pb2_grpc
from gateway_common.db import unavailable_on_outage
from gateway_common.errors import FieldViolation, GatewayError, Reason
from services.metering.response_store import ResponseStore, StoredResponse, check_key, check_put, not_found

_DATABASE = "metering database"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _refused(violations: list[FieldViolation]) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_REQUEST,
        "; ".join(f"{v.field}: {v.description}" for v in violations),
        {"param": violations[0].field},
        field_violations=violations,
    )


def _to_proto(stored: StoredResponse) -> response_store_pb2.StoredResponse:
    created_at = timestamp_pb2.Timestamp()
    created_at.FromDatetime(stored.created_at)
    return response_store_pb2.StoredResponse(
        tenant_id=stored.tenant_id,
        response_id=stored.response_id,
        key_id=stored.key_id,
        response=stored.response,
        input_items=stored.input_items,
        previous_response_id=stored.previous_response_id,
        created_at=created_at,
    )


class ResponseStoreServicer(response_store_pb2_grpc.ResponseStoreServiceServicer):
    """Puts, gets and deletes one tenant's stored responses; refuses what cannot be stored."""

    def __init__(self, store: ResponseStore, *, max_bytes: int, clock: Callable[[], datetime] = _utc_now) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._clock = clock

    async def PutResponse(
        self,
        request: response_store_pb2.PutResponseRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> response_store_pb2.PutResponseResponse:
        """Store (or replace) the response; INVALID_ARGUMENT naming the field when it cannot be."""
        wire = request.stored
        # An unset creation time is "now": retention then counts from when it was stored.
        created_at = self._clock()
        if wire.HasField("created_at"):
            try:
                created_at = wire.created_at.ToDatetime(UTC)
            except (ValueError, OverflowError):
                # Seconds or nanos outside what a Timestamp may hold: the caller's mistake, not a bug here.
                raise _refused([FieldViolation("stored.created_at", "must be a valid timestamp")]) from None
        stored = StoredResponse(
            tenant_id=wire.tenant_id,
            response_id=wire.response_id,
            key_id=wire.key_id,
            previous_response_id=wire.previous_response_id,
            created_at=created_at,
            response=wire.response,
            input_items=wire.input_items,
        )
        violations = check_put(stored, self._max_bytes)
        if violations:
            raise _refused(violations)
        async with unavailable_on_outage(_DATABASE):
            await self._store.put(stored)
        return response_store_pb2.PutResponseResponse()

    async def GetResponse(
        self,
        request: response_store_pb2.GetResponseRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> response_store_pb2.GetResponseResponse:
        """The tenant's response; NOT_FOUND when it has none of that id."""
        violations = check_key(request.tenant_id, request.response_id)
        if violations:
            raise _refused(violations)
        async with unavailable_on_outage(_DATABASE):
            stored = await self._store.get(request.tenant_id, request.response_id)
        if stored is None:
            raise not_found(request.response_id)
        return response_store_pb2.GetResponseResponse(stored=_to_proto(stored))

    async def DeleteResponse(
        self,
        request: response_store_pb2.DeleteResponseRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> response_store_pb2.DeleteResponseResponse:
        """Delete the tenant's response; NOT_FOUND as :meth:`GetResponse`."""
        violations = check_key(request.tenant_id, request.response_id)
        if violations:
            raise _refused(violations)
        async with unavailable_on_outage(_DATABASE):
            deleted = await self._store.delete(request.tenant_id, request.response_id)
        if not deleted:
            raise not_found(request.response_id)
        return response_store_pb2.DeleteResponseResponse()
