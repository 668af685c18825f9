"""Which of a tenant's credentials serves an upstream call, and what happens when the upstream refuses it.

Per call: the tenant's usable credentials for the provider (cached), one chosen and reserved by the
rate limit service (best priority with quota left, not cooling down), its OAuth token refreshed if
about to expire, the call made with it, the reservation settled with what the call used. A 429 or
401/403 from the upstream puts the credential into cooldown and the next usable one is tried in the
same attempt; when none is left the upstream's last refusal is the answer, its Retry-After the
earliest cooldown end. A tenant with no credentials for the provider gets the provider's own key.

A call cancelled mid-way, or a stream that breaks after its first chunk, settles its reservation at
once with what it used as far as known (the upstream's usage, else a ceiling: the prompt's bytes and
the bytes streamed, else the estimate), in the background so that a cancellation never waits on it;
should that settlement fail, the lease's expiry releases the reservation as before.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.protobuf import duration_pb2

from gateway.chat.v1 import chat_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.errors import GatewayError, Reason
from services.providers.http import upstream_error
from services.providers.tenant_credentials import (
    CredentialCache,
    OAuthRefresher,
    TenantCredential,
    current_credential,
)

if TYPE_CHECKING:
    from gateway.ratelimit.v1.ratelimit_pb2_grpc import RateLimitServiceAsyncStub as CredentialLimiter

T = TypeVar("T")

log = logging.getLogger(__name__)

_REFUSED_STATUSES = frozenset({401, 403, 429})
"""Upstream answers that say "not with this credential": cool it down and try the next."""

_RPC_TIMEOUT_S = 5.0


def estimate_tokens(request: chat_pb2.ChatCompletionRequest | chat_pb2.EmbeddingRequest) -> int:
    """A ceiling of the tokens a call may use: its serialized size (a token is at least a byte of
    text) plus the completion's cap when there is one."""
    estimate = request.ByteSize()
    if isinstance(request, chat_pb2.ChatCompletionRequest):
        if request.HasField("max_completion_tokens"):
            estimate += request.max_completion_tokens
        elif request.HasField("max_tokens"):
            estimate += request.max_tokens
    return estimate


def _upstream_status(error: GatewayError) -> int:
    try:
        return int(error.metadata.get("upstream_status", "0"))
    except ValueError:
        return 0


def _duration(seconds: float) -> duration_pb2.Duration:
    seconds = max(0.0, seconds)
    return duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))


class CredentialSelection:
    """Runs upstream calls with a tenant's own credentials (see the module docstring)."""

    def __init__(self, cache: CredentialCache, limiter: CredentialLimiter, refresher: OAuthRefresher) -> None:
        self._cache = cache
        self._limiter = limiter
        self._refresher = refresher
        # Settlements of abandoned calls, kept referenced until done (asyncio holds tasks weakly).
        self._abandoned: set[asyncio.Task[None]] = set()

    async def credentials(self, tenant_id: str, provider: str) -> tuple[TenantCredential, ...]:
        """The tenant's usable credentials for ``provider``; empty for none (or no tenant named)."""
        if not tenant_id:
            return ()
        try:
            return await self._cache.get(tenant_id, provider)
        except grpc.aio.AioRpcError:
            # Never fall back to the provider's own key: the tenant may have credentials of its own.
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.DEPENDENCY_UNAVAILABLE,
                "The tenant's upstream credentials could not be resolved.",
                {"provider": provider, "retryable": "true"},
            ) from None

    async def walk(self, tenant_id: str, provider: str, estimated_tokens: int) -> CredentialWalk | None:
        """The walk over the tenant's credentials for one call; None when it has none (the provider's
        own key applies)."""
        candidates = await self.credentials(tenant_id, provider)
        return CredentialWalk(self, provider, candidates, estimated_tokens) if candidates else None

    async def call(
        self,
        tenant_id: str,
        provider: str,
        estimated_tokens: int,
        run: Callable[[], Awaitable[T]],
        tokens_of: Callable[[T], int],
    ) -> tuple[T, str]:
        """``run()`` with the best usable credential, the next one after a refusal; the result and
        the id of the credential that served it ("" for the provider's own key)."""
        walk = await self.walk(tenant_id, provider, estimated_tokens)
        if walk is None:
            return await run(), ""
        while True:
            credential = await walk.next()
            token = current_credential.set(credential)
            try:
                result = await run()
            except GatewayError as exc:
                await walk.refused(exc)
                continue
            except BaseException:
                # Cancelled mid-call: what the upstream used is unknown, so the estimate is settled.
                walk.abandoned(None)
                raise
            finally:
                current_credential.reset(token)
            await walk.succeeded(tokens_of(result))
            return result, credential.credential_id

    async def _acquire(
        self, candidates: Sequence[TenantCredential], estimated_tokens: int
    ) -> tuple[str, ratelimit_pb2.AcquireCredentialResponse]:
        reservation_id = uuid.uuid4().hex
        answer = await self._limiter.AcquireCredential(
            ratelimit_pb2.AcquireCredentialRequest(
                reservation_id=reservation_id,
                candidates=[
                    ratelimit_pb2.CredentialCandidate(
                        credential_id=c.credential_id, limits=c.limits, priority=c.priority
                    )
                    for c in candidates
                ],
                estimated_tokens=estimated_tokens,
            ),
            timeout=_RPC_TIMEOUT_S,
        )
        return reservation_id, answer

    async def _settle(self, reservation_id: str, tokens: int, succeeded: str) -> None:
        await self._limiter.SettleCredential(
            ratelimit_pb2.SettleCredentialRequest(
                reservation_id=reservation_id,
                actual=ratelimit_pb2.Amounts(requests=1, tokens=max(0, tokens)),
                succeeded_credential_id=succeeded,
            ),
            timeout=_RPC_TIMEOUT_S,
        )

    def settle_in_background(self, reservation_id: str, tokens: int) -> None:
        """Settle an abandoned call's reservation without making its caller wait."""
        task = asyncio.create_task(self._settle_abandoned(reservation_id, tokens))
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    async def _settle_abandoned(self, reservation_id: str, tokens: int) -> None:
        try:
            await self._settle(reservation_id, tokens, "")
        except grpc.aio.AioRpcError as exc:
            log.warning("an abandoned credential reservation is left to its lease: %s", exc.code().name)
        except grpc.aio.UsageError:
            # The channel closed under it (the service is stopping): the lease releases it.
            log.warning("an abandoned credential reservation is left to its lease: the channel is closed")

    async def _report(self, credential_id: str, status: int, retry_after_s: float | None) -> None:
        request = ratelimit_pb2.ReportCredentialFailureRequest(credential_id=credential_id, upstream_status=status)
        if retry_after_s is not None:
            request.retry_after.CopyFrom(_duration(retry_after_s))
        await self._limiter.ReportCredentialFailure(request, timeout=_RPC_TIMEOUT_S)

    async def fresh(self, provider: str, credential: TenantCredential) -> TenantCredential:
        """The credential with an access token that is not about to expire."""
        return await self._refresher.fresh(provider, credential)


class CredentialWalk:
    """One call's walk over a tenant's credentials: :meth:`next` chooses and reserves one, then the
    caller reports :meth:`succeeded`, :meth:`refused` or (cancelled, or broken after its first
    chunk) :meth:`abandoned`."""

    def __init__(
        self,
        selection: CredentialSelection,
        provider: str,
        candidates: Sequence[TenantCredential],
        estimated_tokens: int,
    ) -> None:
        self._selection = selection
        self._provider = provider
        self._left = list(candidates)
        self._by_id = {c.credential_id: c for c in candidates}
        self._estimate = estimated_tokens
        self._reservation: str | None = None
        self._chosen: str = ""
        self._last_refusal: GatewayError | None = None

    async def next(self) -> TenantCredential:
        """The best usable credential left, reserved and with a fresh token; raises the upstream's
        last refusal (or a 429) when none is left."""
        if not self._left:
            raise self._none_left(None)
        reservation_id, answer = await self._selection._acquire(self._left, self._estimate)
        if not answer.allowed or answer.credential_id not in self._by_id:
            raise self._none_left(answer)
        chosen = self._by_id[answer.credential_id]
        self._left = [c for c in self._left if c.credential_id != chosen.credential_id]
        self._reservation, self._chosen = reservation_id, chosen.credential_id
        return await self._selection.fresh(self._provider, chosen)

    async def succeeded(self, tokens: int | None) -> None:
        """The call succeeded with the current credential, using ``tokens`` (None: unknown, the
        estimate stays counted); ends its failure streak."""
        await self._release(self._estimate if tokens is None else tokens, self._chosen)

    def abandoned(self, tokens: int | None) -> None:
        """The call was cancelled or its stream broke after content went out: settle the current
        reservation now, in the background, with ``tokens`` (None: unknown, the estimate)."""
        reservation, self._reservation = self._reservation, None
        if reservation is not None:
            self._selection.settle_in_background(reservation, self._estimate if tokens is None else tokens)

    async def refused(self, error: GatewayError) -> None:
        """The call failed with ``error``: a refusal of the credential (429, 401, 403) cools it down
        and returns, so the caller tries :meth:`next`; any other error is re-raised."""
        await self._release(0, "")
        status = _upstream_status(error)
        if status not in _REFUSED_STATUSES:
            raise error
        await self._selection._report(self._chosen, status, error.retry_after_s)
        self._last_refusal = error

    def _none_left(self, answer: ratelimit_pb2.AcquireCredentialResponse | None) -> GatewayError:
        retry_after_s: float | None = None
        if answer is not None and answer.HasField("retry_after"):
            retry_after_s = answer.retry_after.seconds + answer.retry_after.nanos / 1e9
        error = self._last_refusal
        if error is None:
            body = (
                b'{"error": {"message": "every credential of this tenant for the provider is cooling down '
                b'or out of quota", "type": "rate_limit_error", "code": "credentials_exhausted"}}'
            )
            error = upstream_error(self._provider, 429, {}, body)
        if retry_after_s is not None:
            error.retry_after_s = retry_after_s
        error.metadata.setdefault("provider", self._provider)
        return error

    async def _release(self, tokens: int, succeeded: str) -> None:
        reservation, self._reservation = self._reservation, None
        if reservation is not None:
            await self._selection._settle(reservation, tokens, succeeded)
