"""The prompt log read back: a tenant's latest logged calls, as previews with their usage.

A servicer mixin and the SQL behind it, kept apart from the rest of metering (like
:mod:`services.metering.descriptor_usage`). Logs were redacted before they were stored; the
previews here are only shortened, for a listing a person reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metering.v1 import metering_pb2
from gateway_common import identity
from gateway_common.db import unavailable_on_outage
from gateway_common.errors import GatewayError, Reason, invalid_argument

MAX_ENTRIES = 1000
"""The most entries one query returns."""

PREVIEW_CHARS = 500
"""How much of a request's message text and of an answer a preview shows."""


@dataclass(frozen=True, slots=True)
class PromptLogEntry:
    """One logged call with its usage; ``request_json`` and ``response_text`` as stored."""

    event_id: str
    request_id: str
    tenant_id: str
    key_id: str
    model: str
    time: datetime
    prompt_tokens: int
    completion_tokens: int
    request_json: str
    response_text: str


class PromptLogStore(Protocol):
    """A ledger that can list a tenant's latest prompt logs."""

    async def latest_prompt_logs(self, tenant_id: str, limit: int) -> list[PromptLogEntry]:
        """The tenant's ``limit`` latest logged calls, newest first."""
        ...


def _shorten(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _texts(value: Any) -> list[str]:
    # The canonical request's messages in protobuf JSON: text sits under "text" / "content" keys,
    # at whatever depth content parts put it.
    if isinstance(value, dict):
        found: list[str] = []
        for key, item in value.items():
            if key in ("text", "content") and isinstance(item, str):
                found.append(item)
            else:
                found.extend(_texts(item))
        return found
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return []


def request_preview(request_json: str) -> str:
    """The start of the messages' text of a logged request (its raw JSON when it has none)."""
    try:
        messages = json.loads(request_json).get("messages", [])
    except (ValueError, AttributeError):
        return _shorten(request_json)
    texts = _texts(messages)
    return _shorten("\n".join(texts) if texts else request_json)


async def latest_prompt_logs(
    engine: AsyncEngine, events: Table, logs: Table, tenant_id: str, limit: int
) -> list[PromptLogEntry]:
    """The tenant's latest logs joined with their usage events (indexed by tenant and time)."""
    e, p = events.c, logs.c
    statement = (
        select(
            e.event_id,
            e.request_id,
            e.tenant_id,
            e.key_id,
            e.model,
            e.time,
            e.prompt_tokens,
            e.completion_tokens,
            p.request_json,
            p.response_text,
        )
        .select_from(events.join(logs, p.event_id == e.event_id))
        .where(e.tenant_id == tenant_id)
        .order_by(e.time.desc(), e.event_id.desc())
        .limit(limit)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [
        PromptLogEntry(
            event_id=str(row["event_id"]),
            request_id=str(row["request_id"]),
            tenant_id=str(row["tenant_id"]),
            key_id=str(row["key_id"]),
            model=str(row["model"]),
            # SQLite hands back naive datetimes; they were stored as UTC.
            time=row["time"] if row["time"].tzinfo else row["time"].replace(tzinfo=UTC),
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            request_json=str(row["request_json"]),
            response_text=str(row["response_text"]),
        )
        for row in rows
    ]


class PromptLogServicer:
    """``QueryPromptLog``, mixed into the metering servicer (which provides ``_store``)."""

    _store: Any

    async def QueryPromptLog(
        self,
        request: metering_pb2.QueryPromptLogRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> metering_pb2.QueryPromptLogResponse:
        """The named tenant's latest entries; a request naming no tenant is refused, whoever sends it."""
        if not request.tenant_id:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.CALLER_NOT_ALLOWED,
                f"service identity {identity.caller_var.get()!r} must name the tenant whose prompt log it reads",
                {"param": "tenant_id"},
            )
        if not 1 <= request.limit <= MAX_ENTRIES:
            raise invalid_argument(f"limit must be between 1 and {MAX_ENTRIES}, not {request.limit}", "limit")
        store: PromptLogStore = self._store
        async with unavailable_on_outage("metering database"):
            entries = await store.latest_prompt_logs(request.tenant_id, request.limit)
        response = metering_pb2.QueryPromptLogResponse()
        for entry in entries:
            time = timestamp_pb2.Timestamp()
            time.FromDatetime(entry.time)
            response.entries.append(
                metering_pb2.PromptLogEntry(
                    event_id=entry.event_id,
                    request_id=entry.request_id,
                    tenant_id=entry.tenant_id,
                    key_id=entry.key_id,
                    model=entry.model,
                    time=time,
                    prompt_tokens=entry.prompt_tokens,
                    completion_tokens=entry.completion_tokens,
                    request_preview=request_preview(entry.request_json),
                    response_preview=_shorten(entry.response_text),
                )
            )
        return response
