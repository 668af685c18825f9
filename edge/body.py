"""Reading a JSON request body within the configured size limit, every value bounded."""

from __future__ import annotations

from typing import Any

import grpc
from starlette.requests import Request

from gateway_common.errors import GatewayError, Reason, invalid_argument
from gateway_common.openai_wire import loads_bounded


class BodyTooLarge(GatewayError):
    """A request body over the configured limit (HTTP 413)."""


async def read_json(request: Request, limit: int) -> Any:
    """The parsed JSON body; 413 past ``limit`` bytes (checked while reading), 400 naming the path when
    it is not JSON or holds a value protobuf could not carry (see ``openai_wire.bounds``)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise invalid_argument("The request body is empty; expected a JSON object.", "body")
    return loads_bounded(raw)


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_REQUEST,
        f"The request body exceeds the maximum size of {limit} bytes.",
        {"param": "body"},
    )
