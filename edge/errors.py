"""The one table from gRPC status to HTTP status and OpenAI error body.

The router decides what went wrong (code, reason, details); the edge only words it the way
OpenAI clients expect: ``{"error": {"message", "type", "param", "code"}}`` plus ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

import grpc

from edge.jsonio import dumps
from gateway_common.errors import GatewayError, Reason, retry_after_seconds

_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Failures of an upstream (as opposed to this gateway's own services) are a bad gateway.
_UPSTREAM_REASONS = {
    Reason.UPSTREAM_ERROR,
    Reason.UPSTREAM_STREAM_BROKEN,
    Reason.ALL_CANDIDATES_FAILED,
    Reason.UPSTREAM_TIMEOUT,
}

_TYPE_AND_CODE: dict[str, tuple[str, str | None]] = {
    Reason.INVALID_REQUEST: ("invalid_request_error", None),
    Reason.MODEL_NOT_FOUND: ("invalid_request_error", "model_not_found"),
    Reason.MISSING_API_KEY: ("invalid_request_error", "missing_api_key"),
    Reason.INVALID_API_KEY: ("invalid_request_error", "invalid_api_key"),
    Reason.PERMISSION_DENIED: ("permission_error", "insufficient_permissions"),
    Reason.MODEL_NOT_ALLOWED: ("permission_error", "model_not_allowed"),
    # Governed LLM Gateway's clients branch on error.type; OpenAI's SDKs read only the status.
    Reason.RATE_LIMITED: ("rate_limit_exceeded", "rate_limit_exceeded"),
    Reason.BUDGET_EXCEEDED: ("insufficient_quota", "insufficient_quota"),
    Reason.COST_LIMIT_EXCEEDED: ("invalid_request_error", "cost_limit_exceeded"),
    Reason.POLICY_VIOLATION: ("invalid_request_error", "policy_violation"),
    Reason.UNSUPPORTED_FIELD: ("invalid_request_error", "unsupported_parameter"),
    Reason.CONTENT_FILTERED: ("invalid_request_error", "content_filter"),
    Reason.CONTEXT_LENGTH_EXCEEDED: ("invalid_request_error", "context_length_exceeded"),
    Reason.PROVIDER_NOT_CONFIGURED: ("server_error", "provider_not_configured"),
    Reason.DEPENDENCY_UNAVAILABLE: ("server_error", "service_unavailable"),
    Reason.UPSTREAM_TIMEOUT: ("server_error", "timeout"),
    Reason.UPSTREAM_STREAM_BROKEN: ("server_error", "upstream_stream_broken"),
    Reason.ALL_CANDIDATES_FAILED: ("server_error", "all_candidates_failed"),
    Reason.INTERNAL: ("server_error", "internal_error"),
}

_UPSTREAM_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def http_status(error: GatewayError) -> int:
    """The HTTP status of a gateway error."""
    if error.code == grpc.StatusCode.UNAVAILABLE and error.reason in _UPSTREAM_REASONS:
        return 502
    return _HTTP_STATUS.get(error.code, 500)


def error_body(error: GatewayError) -> dict[str, Any]:
    """The OpenAI error object for ``error``; upstream errors keep the upstream's code."""
    status = http_status(error)
    kind, code = _TYPE_AND_CODE.get(
        str(error.reason), ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    if error.reason == Reason.UPSTREAM_ERROR:
        code = error.metadata.get("upstream_code") or None
        kind = _UPSTREAM_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body: dict[str, Any] = {"message": error.message, "type": kind, "param": error.metadata.get("param"), "code": code}
    if error.metadata.get("attempts"):
        # Every attempt the router made, in order: which deployment answered what.
        body["attempts"] = error.metadata["attempts"].split("; ")
    return {"error": body}


def error_headers(error: GatewayError) -> dict[str, str]:
    """``Retry-After`` when the error says when to retry."""
    seconds = retry_after_seconds(error.retry_after_s)
    return {"retry-after": str(seconds)} if seconds is not None else {}


def error_json(error: GatewayError) -> bytes:
    """The error body as JSON bytes."""
    return dumps(error_body(error))
