"""Domain errors and their one mapping to ``google.rpc.Status`` with rich details.

Every service raises :class:`GatewayError`; servicers turn it into a gRPC status with
``ErrorInfo`` (reason, domain, metadata) plus ``RetryInfo``, ``QuotaFailure`` and ``BadRequest``
where they apply. A client turns a failed call back into the same :class:`GatewayError`, so an
error crosses any number of hops without losing its details.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "llm-gateway"
_DETAILS_KEY = "grpc-status-details-bin"
# A service that cannot be reached is usually back within a second or two (a restart, a
# replica being replaced): the client is told to retry after that, not at once.
_TRANSPORT_RETRY_AFTER_S = 1.0

log = logging.getLogger(__name__)


class Reason(StrEnum):
    """Machine-readable causes, carried in ``ErrorInfo.reason``."""

    INVALID_REQUEST = "INVALID_REQUEST"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    MISSING_API_KEY = "MISSING_API_KEY"
    INVALID_API_KEY = "INVALID_API_KEY"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    MODEL_NOT_ALLOWED = "MODEL_NOT_ALLOWED"
    RATE_LIMITED = "RATE_LIMITED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    COST_LIMIT_EXCEEDED = "COST_LIMIT_EXCEEDED"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    PROVIDER_NOT_CONFIGURED = "PROVIDER_NOT_CONFIGURED"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_STREAM_BROKEN = "UPSTREAM_STREAM_BROKEN"
    UNSUPPORTED_FIELD = "UNSUPPORTED_FIELD"
    CONTENT_FILTERED = "CONTENT_FILTERED"
    CONTEXT_LENGTH_EXCEEDED = "CONTEXT_LENGTH_EXCEEDED"
    ALL_CANDIDATES_FAILED = "ALL_CANDIDATES_FAILED"
    DEPENDENCY_UNAVAILABLE = "DEPENDENCY_UNAVAILABLE"
    MISSING_SERVICE_IDENTITY = "MISSING_SERVICE_IDENTITY"
    CALLER_NOT_ALLOWED = "CALLER_NOT_ALLOWED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path ("messages[0].role") and what is wrong."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota: its subject ("key:k1 requests/minute") and a description."""

    subject: str
    description: str


@dataclass
class GatewayError(Exception):
    """A failure with exactly one gRPC status and the details a client needs to act on it."""

    code: grpc.StatusCode
    reason: Reason | str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None
    field_violations: list[FieldViolation] = field(default_factory=list)
    quota_violations: list[QuotaViolation] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    @property
    def retryable(self) -> bool:
        """Whether another attempt (here or on another provider) may succeed."""
        return self.metadata.get("retryable") == "true"

    def to_status_proto(self) -> status_pb2.Status:
        """The ``google.rpc.Status`` with every detail packed."""
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(reason=str(self.reason), domain=DOMAIN, metadata=self.metadata)
        details.append(_pack(info))
        if self.retry_after_s is not None:
            seconds = max(0.0, self.retry_after_s)
            delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        if self.quota_violations:
            quota = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
                    for v in self.quota_violations
                ]
            )
            details.append(_pack(quota))
        if self.field_violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.field_violations
                ]
            )
            details.append(_pack(bad))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    def to_grpc_status(self) -> grpc.Status:
        """The status to pass to ``context.abort_with_status``."""
        return rpc_status.to_status(self.to_status_proto())

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError, service: str | None = None) -> GatewayError:
        """Rebuild the error a downstream service raised, details included.

        ``service`` names the callee in plain words ("rate limit"). A failure without a rich status
        did not come from a gateway service but from the transport (the service is down, a
        connection broke, a deadline passed): its text names internal addresses, so it goes to the
        log and the caller gets a sentence naming the service instead.
        """
        code = error.code()
        trailing: Any = error.trailing_metadata() or ()
        status: status_pb2.Status | None = None
        for key, value in trailing:
            if key == _DETAILS_KEY and isinstance(value, bytes):
                status = status_pb2.Status.FromString(value)
        if status is None:
            return cls.from_transport_failure(code, error.details() or code.name, service)
        return cls.from_status_proto(status)

    @classmethod
    def from_transport_failure(cls, code: grpc.StatusCode, detail: str, service: str | None = None) -> GatewayError:
        """The error for a call that failed below the service (``detail`` is logged, never returned)."""
        subject = f"the {service} service" if service else "a gateway service"
        log.warning("call to %s failed: %s: %s", subject, code.name, detail)
        metadata = {"dependency": service.replace(" ", "_")} if service else {}
        if code == grpc.StatusCode.UNAVAILABLE:
            return cls(
                code,
                Reason.DEPENDENCY_UNAVAILABLE,
                f"{subject.capitalize()} is unavailable; retry later.",
                metadata,
                retry_after_s=_TRANSPORT_RETRY_AFTER_S,
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"{subject.capitalize()} did not answer in time."
        elif code == grpc.StatusCode.CANCELLED:
            message = f"The call to {subject} was cancelled."
        else:
            message = f"{subject.capitalize()} failed ({code.name})."
        return cls(code, Reason.INTERNAL, message, metadata)

    @classmethod
    def from_status_proto(cls, status: status_pb2.Status) -> GatewayError:
        """Rebuild an error from a ``google.rpc.Status``."""
        code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
        error = cls(code, Reason.INTERNAL, status.message)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                error.reason = info.reason
                error.metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                error.retry_after_s = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
            elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                detail.Unpack(quota)
                error.quota_violations = [QuotaViolation(v.subject, v.description) for v in quota.violations]
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                error.field_violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        return error


_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}
assert _CODES[code_pb2.RESOURCE_EXHAUSTED] is grpc.StatusCode.RESOURCE_EXHAUSTED


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def invalid_argument(message: str, field_path: str | None = None) -> GatewayError:
    """A request the gateway will not accept, naming the field when there is one."""
    violations = [FieldViolation(field_path, message)] if field_path else []
    metadata = {"param": field_path} if field_path else {}
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_REQUEST,
        message,
        metadata,
        field_violations=violations,
    )


def retry_after_seconds(value: float | None) -> int | None:
    """A Retry-After header value: whole seconds, rounded up, at least 1."""
    if value is None:
        return None
    return max(1, math.ceil(value))
