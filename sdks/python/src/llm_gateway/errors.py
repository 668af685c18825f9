"""Typed exceptions, one per error class, the same whichever transport raised them.

Over HTTP the gateway answers OpenAI's error body (``{"error": {"message", "type", "param",
"code"}}``) and ``Retry-After``; over gRPC a status with ``google.rpc`` details (``ErrorInfo``
reason and metadata, ``RetryInfo``, ``BadRequest``). Both become the same exception class with the
same ``code`` (the edge's code for the ErrorInfo reason), so code written against one transport
handles the other's errors.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """Any failure of a gateway call; raised as is for server errors (5xx, gRPC INTERNAL/UNAVAILABLE)."""

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        status_code: int | None = None,
        grpc_code: str | None = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        """The id the gateway logged the request under (``x-request-id``)."""
        self.status_code = status_code
        """The HTTP status (HTTP transport only)."""
        self.grpc_code = grpc_code
        """The gRPC status code's name, e.g. "RESOURCE_EXHAUSTED" (gRPC transport only)."""
        self.code = code
        """The gateway's error code ("model_not_found", "rate_limit_exceeded", …)."""
        self.type = type
        """OpenAI's error type ("invalid_request_error", …), when the gateway sent one."""
        self.param = param
        """The request parameter the error is about."""
        self.reason = reason
        """The ``google.rpc.ErrorInfo`` reason ("RATE_LIMITED", …), when the transport carries it."""
        self.retry_after = retry_after
        """Seconds to wait before retrying, when the gateway said."""
        self.body = body
        """The raw error body (HTTP) or None."""

    def __str__(self) -> str:
        where = self.status_code if self.status_code is not None else self.grpc_code
        parts = [str(where)] if where is not None else []
        if self.code:
            parts.append(self.code)
        prefix = " ".join(parts)
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{prefix}: {self.message}{suffix}" if prefix else f"{self.message}{suffix}"


class APIConnectionError(APIError):
    """The gateway could not be reached, or the connection broke before an answer."""


class APITimeoutError(APIConnectionError):
    """No answer in time: the client's timeout, or the gateway's deadline (HTTP 504, DEADLINE_EXCEEDED)."""


class BadRequestError(APIError):
    """The request is malformed or names something invalid (HTTP 400, INVALID_ARGUMENT)."""


class AuthenticationError(APIError):
    """The key is missing or not valid (HTTP 401, UNAUTHENTICATED)."""


class PermissionDeniedError(APIError):
    """The key may not do this: a scope or a model it lacks (HTTP 403, PERMISSION_DENIED)."""


class NotFoundError(APIError):
    """No such model, job, tenant, key or credential (HTTP 404, NOT_FOUND)."""


class ConflictError(APIError):
    """It exists already, or changed meanwhile (HTTP 409, ALREADY_EXISTS / ABORTED)."""


class RateLimitError(APIError):
    """Over a rate limit (HTTP 429, RESOURCE_EXHAUSTED); ``retry_after`` says when to try again."""


class BudgetExceededError(RateLimitError):
    """A spend budget is used up (code "insufficient_quota"): it resets only at the start of its
    window, so it is never retried automatically."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    504: APITimeoutError,
}

_BY_GRPC: dict[str, type[APIError]] = {
    "INVALID_ARGUMENT": BadRequestError,
    "FAILED_PRECONDITION": BadRequestError,
    "OUT_OF_RANGE": BadRequestError,
    "UNIMPLEMENTED": BadRequestError,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "NOT_FOUND": NotFoundError,
    "ALREADY_EXISTS": ConflictError,
    "ABORTED": ConflictError,
    "RESOURCE_EXHAUSTED": RateLimitError,
    "DEADLINE_EXCEEDED": APITimeoutError,
}

REASON_CODES: dict[str, str] = {
    "MODEL_NOT_FOUND": "model_not_found",
    "MISSING_API_KEY": "missing_api_key",
    "INVALID_API_KEY": "invalid_api_key",
    "PERMISSION_DENIED": "insufficient_permissions",
    "MODEL_NOT_ALLOWED": "model_not_allowed",
    "RATE_LIMITED": "rate_limit_exceeded",
    "BUDGET_EXCEEDED": "insufficient_quota",
    "COST_LIMIT_EXCEEDED": "cost_limit_exceeded",
    "POLICY_VIOLATION": "policy_violation",
    "UNSUPPORTED_FIELD": "unsupported_parameter",
    "CONTENT_FILTERED": "content_filter",
    "CONTEXT_LENGTH_EXCEEDED": "context_length_exceeded",
    "PROVIDER_NOT_CONFIGURED": "provider_not_configured",
    "DEPENDENCY_UNAVAILABLE": "service_unavailable",
    "UPSTREAM_TIMEOUT": "timeout",
    "UPSTREAM_STREAM_BROKEN": "upstream_stream_broken",
    "ALL_CANDIDATES_FAILED": "all_candidates_failed",
    "INTERNAL": "internal_error",
}
"""ErrorInfo reason → the code the edge puts in the HTTP error body (edge/errors.py), so both
transports report the same ``code``; a reason not listed (INVALID_REQUEST) has none over HTTP either."""

_BUDGET_CODE = "insufficient_quota"


def _retry_after_header(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        # An HTTP date: the gateway never sends one; without a clock to compare, ignore it.
        return None


def from_http(status: int, body: Any, headers: Any, request_id: str | None) -> APIError:
    """The exception for an HTTP error answer (``body`` is the decoded JSON, or the text)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": body if isinstance(body, str) and body else f"HTTP {status}"}
    code = error.get("code")
    cls = _BY_STATUS.get(status, APIError)
    if cls is RateLimitError and code == _BUDGET_CODE:
        cls = BudgetExceededError
    return cls(
        str(error.get("message") or f"HTTP {status}"),
        request_id=headers.get("x-request-id") or request_id,
        status_code=status,
        code=code if isinstance(code, str) else None,
        type=error.get("type") if isinstance(error.get("type"), str) else None,
        param=error.get("param") if isinstance(error.get("param"), str) else None,
        retry_after=_retry_after_header(headers.get("retry-after")),
        body=body,
    )


def from_stream_line(error: dict[str, Any], request_id: str | None) -> APIError:
    """The exception for an in-band ``{"error": …}`` that ends a stream after its first chunk."""
    code = error.get("code")
    cls: type[APIError] = APIError
    if code == _BUDGET_CODE:
        cls = BudgetExceededError
    elif code == "rate_limit_exceeded":
        cls = RateLimitError
    return cls(
        str(error.get("message") or "The stream failed."),
        request_id=request_id,
        code=code if isinstance(code, str) else None,
        type=error.get("type") if isinstance(error.get("type"), str) else None,
        param=error.get("param") if isinstance(error.get("param"), str) else None,
        body={"error": error},
    )


def from_grpc(
    code_name: str,
    message: str,
    *,
    reason: str | None,
    metadata: dict[str, str],
    retry_after: float | None,
    field: str | None,
    request_id: str | None,
) -> APIError:
    """The exception for a failed gRPC call (its status and decoded ``google.rpc`` details).

    A status without rich details did not come from the gateway but from the transport (nothing
    listening, a broken connection): that is a connection error, not a server error.
    """
    if reason is None and code_name == "UNAVAILABLE":
        cls: type[APIError] = APIConnectionError
    elif reason is None and code_name == "CANCELLED":
        cls = APIConnectionError
    else:
        cls = _BY_GRPC.get(code_name, APIError)
    code = REASON_CODES.get(reason or "")
    if reason == "UPSTREAM_ERROR":
        code = metadata.get("upstream_code") or None
    if cls is RateLimitError and reason == "BUDGET_EXCEEDED":
        cls = BudgetExceededError
    return cls(
        message,
        request_id=request_id,
        grpc_code=code_name,
        code=code,
        param=metadata.get("param") or field,
        reason=reason,
        retry_after=retry_after,
    )
