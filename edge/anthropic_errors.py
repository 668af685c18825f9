"""The Anthropic error table: gateway errors as Anthropic's ``{"type": "error", "error": {...}}``.

Beside ``edge/errors.py`` (the OpenAI table) and worded from the same GatewayError, so both façades
agree on what went wrong and differ only in how they say it. Anthropic's SDKs branch on the HTTP
status (and retry 429, 5xx and 529); ``error.type`` is one of the seven the API documents.
"""

from __future__ import annotations

from typing import Any

import grpc

from edge.errors import error_headers, http_status
from gateway_common.errors import GatewayError, Reason

OVERLOADED = 529
"""Anthropic's status for "no capacity right now": every upstream the gateway could use failed."""

# No upstream could take the request: Anthropic's own word for that is overloaded_error (529),
# which its SDKs retry with backoff.
_NO_CAPACITY_REASONS = frozenset(
    {Reason.ALL_CANDIDATES_FAILED, Reason.UPSTREAM_ERROR, Reason.UPSTREAM_TIMEOUT, Reason.UPSTREAM_STREAM_BROKEN}
)

_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    OVERLOADED: "overloaded_error",
}


def anthropic_status(error: GatewayError, body_too_large: bool = False) -> int:
    """The HTTP status of ``error`` on the Anthropic façade."""
    if body_too_large:
        return 413
    if error.code == grpc.StatusCode.UNAVAILABLE and error.reason in _NO_CAPACITY_REASONS:
        return OVERLOADED
    return http_status(error)


def anthropic_error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status: one of the seven the API documents."""
    if status in _TYPES:
        return _TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(error: GatewayError, status: int) -> dict[str, Any]:
    """The Anthropic error object for ``error`` answered with ``status``."""
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": error.message}}


def anthropic_error_headers(error: GatewayError) -> dict[str, str]:
    """``retry-after`` when the error says when to retry (as on the OpenAI façade)."""
    return error_headers(error)
