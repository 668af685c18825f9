"""Reading a JSON request body within the configured size limit, every value bounded."""

from __future__ import annotations

import re
from typing import Any

import grpc
import orjson
from starlette.requests import Request

from gateway_common.errors import GatewayError, Reason, invalid_argument
from gateway_common.openai_wire import loads_bounded
from gateway_common.openai_wire.bounds import check

# A run of 20 digits may be an integer past int64 that the strict parser turns into a double
# (orjson would keep it exact up to 2**64): such bodies take the strict parser.
_LONG_DIGITS = re.compile(rb"\d{20}")


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
    return parse(raw)


def parse(raw: bytes) -> Any:
    """``loads_bounded(raw)``, the same value or the same error, with orjson parsing the common case.

    orjson refuses everything the strict parser would name (NaN, 1e400, lone surrogates, invalid
    UTF-8, other encodings, deep nesting past 1,024): those bodies, and bodies with very long
    integers, go to ``loads_bounded`` for its answer. What orjson accepts is walked by the same
    ``check`` (depth past ``MAX_DEPTH``).
    """
    if _LONG_DIGITS.search(raw) is None:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            check(value)
            return value
    return loads_bounded(raw)


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_REQUEST,
        f"The request body exceeds the maximum size of {limit} bytes.",
        {"param": "body"},
    )
