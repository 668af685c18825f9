"""Stored Responses API responses (``store: true``): what may be stored, and when it expires.

The payloads are opaque bytes the router serializes; this module only bounds them. Ids are bounded
and free of NUL and control characters, so a row is storable on SQLite and PostgreSQL alike and an
id read back is the id that was written. No protobuf and no I/O here: the servicer translates, the
store (:mod:`services.metering.storage.responses`) keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import grpc

from gateway_common.errors import FieldViolation, GatewayError

log = logging.getLogger(__name__)

MAX_ID_BYTES = 256
"""The longest tenant, key or response id accepted, in UTF-8 bytes (OpenAI's ids are ~50)."""

PURGE_BATCH = 500
"""Rows one purge statement deletes: short transactions that never hold a table lock for long."""

PURGE_MAX_BATCHES = 200
"""Batches one purge run deletes at most; what is left waits for the next run, so one run is bounded."""

NOT_FOUND_REASON = "RESPONSE_NOT_FOUND"
"""``ErrorInfo.reason`` of a response that is not the caller's to see (absent, deleted, another tenant's)."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response, as kept: ``response`` and ``input_items`` are the router's bytes."""

    tenant_id: str
    response_id: str
    key_id: str
    previous_response_id: str
    created_at: datetime
    response: bytes
    input_items: bytes


class ResponseStore(Protocol):
    """Stored responses, one per (tenant, response id); every lookup names the tenant."""

    async def put(self, stored: StoredResponse) -> None:
        """Store ``stored``, replacing the tenant's response of the same id if there is one."""
        ...

    async def get(self, tenant_id: str, response_id: str) -> StoredResponse | None:
        """The tenant's response of that id, or None (whether absent or another tenant's)."""
        ...

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        """Delete the tenant's response of that id; whether there was one."""
        ...

    async def purge_created_before(self, cutoff: datetime, batch: int) -> int:
        """Delete at most ``batch`` responses (any tenant's) created before ``cutoff``; how many went."""
        ...


def _check_id(field: str, value: str, *, required: bool) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "must not be empty")] if required else []
    if len(value.encode()) > MAX_ID_BYTES:
        return [FieldViolation(field, f"must not be longer than {MAX_ID_BYTES} bytes")]
    # NUL is unstorable in PostgreSQL text; other control characters have no place in an id and
    # would make log lines and error messages lie about it.
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        return [FieldViolation(field, "must not contain NUL or control characters")]
    return []


def check_key(tenant_id: str, response_id: str, where: str = "") -> list[FieldViolation]:
    """What is wrong with a (tenant, response id) lookup; field paths are prefixed with ``where``."""
    return [
        *_check_id(f"{where}tenant_id", tenant_id, required=True),
        *_check_id(f"{where}response_id", response_id, required=True),
    ]


def check_put(stored: StoredResponse, max_bytes: int) -> list[FieldViolation]:
    """What is wrong with storing ``stored`` (empty when it can be stored); ``max_bytes`` bounds
    the two payloads together, which is what one row holds."""
    violations = [
        *check_key(stored.tenant_id, stored.response_id, "stored."),
        *_check_id("stored.key_id", stored.key_id, required=False),
        *_check_id("stored.previous_response_id", stored.previous_response_id, required=False),
    ]
    size = len(stored.response) + len(stored.input_items)
    if size > max_bytes:
        violations.append(
            FieldViolation("stored.response", f"response and input_items together must not exceed {max_bytes} bytes")
        )
    return violations


def not_found(response_id: str) -> GatewayError:
    """The one answer for a response the caller may not see, whatever the reason: absent, deleted
    and another tenant's read alike (same code, reason and message), so it tells nothing more."""
    return GatewayError(
        grpc.StatusCode.NOT_FOUND,
        NOT_FOUND_REASON,
        f"No response found with id {response_id!r}.",
        {"param": "response_id"},
    )


def retention_cutoff(now: datetime, retention_days: int) -> datetime | None:
    """Responses created before the returned time have expired; None when they are kept forever (0 days)."""
    return None if retention_days == 0 else now - timedelta(days=retention_days)


async def purge_expired(
    store: ResponseStore,
    retention_days: int,
    clock: Callable[[], datetime],
    *,
    batch: int = PURGE_BATCH,
    max_batches: int = PURGE_MAX_BATCHES,
) -> int:
    """Delete responses past retention, ``batch`` rows per statement and ``max_batches`` at most;
    returns how many were deleted. Meant for :class:`gateway_common.periodic.Periodic`."""
    cutoff = retention_cutoff(clock(), retention_days)
    if cutoff is None:
        return 0
    total = 0
    for _ in range(max_batches):
        deleted = await store.purge_created_before(cutoff, batch)
        total += deleted
        if deleted < batch:
            break
    if total:
        log.info("purged %d stored responses created before %s", total, cutoff.isoformat())
    return total
