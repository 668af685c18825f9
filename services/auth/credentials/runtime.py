"""A credential's runtime state as the rate limit service keeps it: cooldown and window usage.

Auth stores credentials; ratelimit counts their windows and cooldowns (keyed by credential id).
The admin listing shows both, so auth asks ratelimit's ``GetCredentialStates`` for the credentials
it lists. That answer is decoration: a rate limit outage (or a slow answer, past a short timeout)
leaves the runtime fields unset and the listing still answers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc

from gateway.auth.v1 import credentials_pb2
from gateway.ratelimit.v1 import ratelimit_pb2

if TYPE_CHECKING:
    from gateway.ratelimit.v1.ratelimit_pb2_grpc import RateLimitServiceAsyncStub

log = logging.getLogger(__name__)

MAX_PER_CALL = 1000
"""The most credentials one GetCredentialStates may name (ratelimit's MAX_STATES)."""


@dataclass(frozen=True, slots=True)
class CredentialRuntime:
    """What ratelimit says of one credential."""

    cooldown_until: datetime | None
    """Until when it is skipped after a 429 or 401; None when it is usable."""
    window_usage: tuple[credentials_pb2.CredentialWindowUsage, ...] = ()
    """Its use of the current window of each of its quotas."""


class RateLimitRuntime:
    """The runtime lookup over ratelimit's ``GetCredentialStates``, degrading to nothing on failure."""

    def __init__(self, stub: RateLimitServiceAsyncStub, timeout_s: float = 1.0) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def __call__(self, credentials: Sequence[credentials_pb2.Credential]) -> Mapping[str, CredentialRuntime]:
        """The runtime state of each credential ratelimit answered for; empty when it did not."""
        found: dict[str, CredentialRuntime] = {}
        for start in range(0, len(credentials), MAX_PER_CALL):
            request = ratelimit_pb2.GetCredentialStatesRequest(
                credentials=[
                    ratelimit_pb2.CredentialCandidate(
                        credential_id=c.credential_id, limits=c.limits, priority=c.priority
                    )
                    for c in credentials[start : start + MAX_PER_CALL]
                ]
            )
            try:
                response = await self._stub.GetCredentialStates(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "credential states not shown: the rate limit service answered %s: %s",
                    exc.code().name,
                    exc.details(),
                )
                return {}
            found.update((state.credential_id, runtime_of(state)) for state in response.states)
        return found


def runtime_of(state: ratelimit_pb2.CredentialRuntimeState) -> CredentialRuntime:
    """Ratelimit's state of one credential, as the listing shows it."""
    until = datetime.fromtimestamp(state.cooldown_until_ms / 1000, UTC) if state.cooldown_until_ms > 0 else None
    usage = tuple(
        credentials_pb2.CredentialWindowUsage(
            quota=window.quota,
            used=max(0, window.quota.limit - window.remaining),
            remaining=window.remaining,
            reset_after=window.reset_after,
        )
        for window in state.windows
    )
    return CredentialRuntime(until, usage)
