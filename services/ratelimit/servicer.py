"""RateLimitService over gRPC: validates and translates protobuf <-> the quota domain, nothing more.

A concurrency cap has no Quota in the contract, so a refusal by a cap shows as ``allowed=false``
with no exceeded QuotaStatus and a ``retry_after`` of one second; the router reads it that way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import duration_pb2

from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.errors import GatewayError, Reason, invalid_argument
from services.ratelimit.credentials import MAX_CANDIDATES, MAX_STATES, Candidate, CredentialSelector
from services.ratelimit.limiter import Limiter
from services.ratelimit.quotas import (
    MAX_AMOUNT,
    MAX_RENEWALS,
    MAX_TTL_MS,
    AcquireRequest,
    Amounts,
    Decision,
    Descriptor,
    DescriptorLimits,
    Quota,
    Unit,
    Window,
)
from services.ratelimit.storage import BackendUnavailable
from services.ratelimit.storage.cooldown import Backoff, MemoryCooldowns

_UNITS = {
    quota_pb2.UNIT_REQUESTS: Unit.REQUESTS,
    quota_pb2.UNIT_TOKENS: Unit.TOKENS,
    quota_pb2.UNIT_COST_MICRO_USD: Unit.COST_MICRO_USD,
}
_WINDOWS = {
    quota_pb2.WINDOW_MINUTE: Window.MINUTE,
    quota_pb2.WINDOW_DAY: Window.DAY,
    quota_pb2.WINDOW_MONTH: Window.MONTH,
}
_UNITS_PB = {unit: pb for pb, unit in _UNITS.items()}
_WINDOWS_PB = {window: pb for pb, window in _WINDOWS.items()}


class RateLimitServicer(ratelimit_pb2_grpc.RateLimitServiceServicer):
    """Acquire, Settle and RenewLeases, translated to the :class:`Limiter`; the credential RPCs to the
    :class:`CredentialSelector`."""

    def __init__(self, limiter: Limiter, credentials: CredentialSelector | None = None) -> None:
        self._limiter = limiter
        # Tests that exercise only the descriptor quotas get in-memory cooldowns.
        self._credentials = credentials or CredentialSelector(limiter, MemoryCooldowns(Backoff()))

    async def Acquire(
        self, request: ratelimit_pb2.AcquireRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ratelimit_pb2.AcquireResponse:
        """Reserve the amounts on every descriptor's quotas, or on none."""
        decision = await self._limiter.acquire(_acquire_request(request))
        return _acquire_response(decision)

    async def Settle(
        self, request: ratelimit_pb2.SettleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ratelimit_pb2.SettleResponse:
        """Replace a reservation's estimate with the actual amounts and free its slot."""
        if not request.reservation_id:
            raise invalid_argument("reservation_id is required", "reservation_id")
        actual = _amounts(request.actual, "actual")
        found = await self._limiter.settle(request.reservation_id, actual)
        return ratelimit_pb2.SettleResponse(found=found)

    async def RenewLeases(
        self, request: ratelimit_pb2.RenewLeasesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ratelimit_pb2.RenewLeasesResponse:
        """Extend the leases of pending reservations; report the ones not pending."""
        if len(request.reservation_ids) > MAX_RENEWALS:
            raise invalid_argument(f"at most {MAX_RENEWALS} reservation_ids per call", "reservation_ids")
        ttl_ms = 0  # the server default
        if request.HasField("lease"):
            ttl_ms = _ttl_ms(request.lease, "lease")
        try:
            missing = await self._limiter.renew(list(request.reservation_ids), ttl_ms)
        except BackendUnavailable:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.DEPENDENCY_UNAVAILABLE,
                "The rate limit backend is unreachable; leases were not renewed.",
                {"retryable": "true"},
            ) from None
        return ratelimit_pb2.RenewLeasesResponse(missing_reservation_ids=missing)

    async def AcquireCredential(
        self, request: ratelimit_pb2.AcquireCredentialRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ratelimit_pb2.AcquireCredentialResponse:
        """Choose the best usable credential among the candidates and reserve on its windows."""
        if not request.reservation_id:
            raise invalid_argument("reservation_id is required", "reservation_id")
        if len(request.candidates) > MAX_CANDIDATES:
            raise invalid_argument(f"at most {MAX_CANDIDATES} candidates per call", "candidates")
        if not 0 <= request.estimated_tokens <= MAX_AMOUNT:
            raise invalid_argument(f"estimated_tokens must be between 0 and {MAX_AMOUNT}", "estimated_tokens")
        ttl_ms = _ttl_ms(request.reservation_ttl, "reservation_ttl") if request.HasField("reservation_ttl") else 0
        candidates = [_candidate(c, f"candidates[{i}]") for i, c in enumerate(request.candidates)]
        with _unavailable("credential cooldowns were not read"):
            choice = await self._credentials.acquire(
                request.reservation_id, candidates, request.estimated_tokens, ttl_ms
            )
        response = ratelimit_pb2.AcquireCredentialResponse(
            allowed=choice.credential_id is not None,
            credential_id=choice.credential_id or "",
            cooling_down_ids=choice.cooling_down,
            exhausted_ids=choice.exhausted,
            degraded=choice.degraded,
        )
        if choice.retry_after_ms is not None:
            _set_duration(response.retry_after, choice.retry_after_ms)
        return response

    async def SettleCredential(
        self, request: ratelimit_pb2.SettleCredentialRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ratelimit_pb2.SettleCredentialResponse:
        """Settle a credential reservation; a success ends the credential's failure streak."""
        if not request.reservation_id:
            raise invalid_argument("reservation_id is required", "reservation_id")
        actual = _amounts(request.actual, "actual")
        with _unavailable("the credential's failure streak was not reset"):
            found = await self._credentials.settle(request.reservation_id, actual, request.succeeded_credential_id)
        return ratelimit_pb2.SettleCredentialResponse(found=found)

    async def ReportCredentialFailure(
        self, request: ratelimit_pb2.ReportCredentialFailureRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ratelimit_pb2.ReportCredentialFailureResponse:
        """Put a refused credential into its exponential cooldown."""
        if not request.credential_id:
            raise invalid_argument("credential_id is required", "credential_id")
        retry_after_ms = 0
        if request.HasField("retry_after"):
            retry_after_ms = min(
                MAX_TTL_MS, max(0, request.retry_after.seconds * 1000 + request.retry_after.nanos // 1_000_000)
            )
        with _unavailable("the cooldown was not recorded"):
            state = await self._credentials.fail(request.credential_id, retry_after_ms)
        return ratelimit_pb2.ReportCredentialFailureResponse(
            cooldown_until_ms=state.until_ms, consecutive_failures=state.streak
        )

    async def GetCredentialStates(
        self, request: ratelimit_pb2.GetCredentialStatesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ratelimit_pb2.GetCredentialStatesResponse:
        """The cooldowns and window usage of the named credentials."""
        if len(request.credentials) > MAX_STATES:
            raise invalid_argument(f"at most {MAX_STATES} credentials per call", "credentials")
        credentials = [_candidate(c, f"credentials[{i}]") for i, c in enumerate(request.credentials)]
        with _unavailable("credential states were not read"):
            states = await self._credentials.states(credentials)
        response = ratelimit_pb2.GetCredentialStatesResponse()
        for state in states:
            item = response.states.add(
                credential_id=state.credential_id,
                cooldown_until_ms=state.cooldown_until_ms,
                consecutive_failures=state.streak,
            )
            item.windows.extend(_acquire_response(Decision(allowed=True, statuses=state.windows)).statuses)
        return response


@contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """BackendUnavailable as the UNAVAILABLE status a caller can retry."""
    try:
        yield
    except BackendUnavailable:
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.DEPENDENCY_UNAVAILABLE,
            f"The rate limit backend is unreachable; {what}.",
            {"retryable": "true"},
        ) from None


def _candidate(item: ratelimit_pb2.CredentialCandidate, path: str) -> Candidate:
    if not item.credential_id:
        raise invalid_argument("credential_id is required", f"{path}.credential_id")
    limits = ratelimit_pb2.DescriptorLimits(quotas=item.limits)
    quotas = _descriptor_limits(limits, path).quotas
    return Candidate(item.credential_id, quotas, item.priority)


def _ttl_ms(ttl: duration_pb2.Duration, field: str) -> int:
    ttl_ms = ttl.seconds * 1000 + ttl.nanos // 1_000_000
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise invalid_argument(f"{field} must be between 1 ms and 7 days when set", field)
    return ttl_ms


def _acquire_request(request: ratelimit_pb2.AcquireRequest) -> AcquireRequest:
    if not request.reservation_id:
        raise invalid_argument("reservation_id is required", "reservation_id")
    limits = tuple(_descriptor_limits(item, f"limits[{i}]") for i, item in enumerate(request.limits))
    ttl_ms = 0  # the server default
    if request.HasField("reservation_ttl"):
        ttl_ms = _ttl_ms(request.reservation_ttl, "reservation_ttl")
    return AcquireRequest(request.reservation_id, limits, _amounts(request.amounts, "amounts"), ttl_ms)


def _descriptor_limits(item: ratelimit_pb2.DescriptorLimits, path: str) -> DescriptorLimits:
    quotas: list[Quota] = []
    for j, quota in enumerate(item.quotas):
        unit = _UNITS.get(quota.unit)
        if unit is None:
            raise invalid_argument("unit must be one of requests, tokens, cost", f"{path}.quotas[{j}].unit")
        window = _WINDOWS.get(quota.window)
        if window is None:
            raise invalid_argument("window must be one of minute, day, month", f"{path}.quotas[{j}].window")
        if quota.limit < 0:
            raise invalid_argument("limit must not be negative", f"{path}.quotas[{j}].limit")
        quotas.append(Quota(unit, window, quota.limit))
    max_concurrent: int | None = None
    if item.HasField("max_concurrent"):
        max_concurrent = item.max_concurrent
        if max_concurrent < 0:
            raise invalid_argument("max_concurrent must not be negative", f"{path}.max_concurrent")
    descriptor: Descriptor = tuple((entry.key, entry.value) for entry in item.descriptor.entries)
    return DescriptorLimits(descriptor, tuple(quotas), max_concurrent)


def _amounts(amounts: ratelimit_pb2.Amounts, path: str) -> Amounts:
    for name in ("requests", "tokens", "cost_micro_usd"):
        value: int = getattr(amounts, name)
        if value < 0:
            raise invalid_argument(f"{name} must not be negative", f"{path}.{name}")
        if value > MAX_AMOUNT:
            raise invalid_argument(f"{name} must be at most {MAX_AMOUNT}", f"{path}.{name}")
    return Amounts(amounts.requests, amounts.tokens, amounts.cost_micro_usd)


def _set_duration(target: duration_pb2.Duration, ms: int) -> None:
    ms = max(0, ms)
    target.seconds, target.nanos = ms // 1000, (ms % 1000) * 1_000_000


def _acquire_response(decision: Decision) -> ratelimit_pb2.AcquireResponse:
    response = ratelimit_pb2.AcquireResponse(allowed=decision.allowed, degraded=decision.degraded, epoch=decision.epoch)
    # Statuses of one descriptor share its message; build each once (this is the hot path).
    descriptors: dict[Descriptor, ratelimit_pb2.Descriptor] = {}
    for status in decision.statuses:
        descriptor = descriptors.get(status.descriptor)
        if descriptor is None:
            descriptor = descriptors[status.descriptor] = ratelimit_pb2.Descriptor(
                entries=[ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in status.descriptor]
            )
        item = response.statuses.add()
        item.descriptor.CopyFrom(descriptor)
        quota = status.quota
        item.quota.unit, item.quota.window, item.quota.limit = (
            _UNITS_PB[quota.unit],
            _WINDOWS_PB[quota.window],
            quota.limit,
        )
        item.remaining = status.remaining
        _set_duration(item.reset_after, status.reset_after_ms)
        item.exceeded = status.exceeded
    if decision.retry_after_ms is not None:
        _set_duration(response.retry_after, decision.retry_after_ms)
    return response
