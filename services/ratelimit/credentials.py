"""Choosing an upstream credential: best priority, not cooling down, with quota left in its windows.

Each credential's windows are ordinary quota counters on the descriptor ``(("credential", id),)``,
reserved through the :class:`Limiter` like any other Acquire: one atomic reservation per candidate
tried, so across replicas sharing Redis exactly the windows' limits are granted. Candidates are tried
in priority order and the first that the windows admit wins; cooldowns come from a
:class:`CooldownStore`. No protobuf here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.ratelimit.limiter import Limiter
from services.ratelimit.quotas import AcquireRequest, Amounts, Descriptor, DescriptorLimits, Quota, QuotaStatus
from services.ratelimit.storage.cooldown import CooldownState, CooldownStore

MAX_CANDIDATES = 100
"""The most candidates one AcquireCredential may name."""

MAX_STATES = 1000
"""The most credentials one GetCredentialStates may name."""

_PEEK_TTL_MS = 1
"""A zero-amount reservation only reads the windows; it may as well expire at once."""


def credential_descriptor(credential_id: str) -> Descriptor:
    """The descriptor a credential's windows are counted on."""
    return (("credential", credential_id),)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A credential that may be chosen, with its own quotas."""

    credential_id: str
    quotas: tuple[Quota, ...]
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen credential (None when none could be), and why the others were skipped."""

    credential_id: str | None
    retry_after_ms: int | None = None
    cooling_down: tuple[str, ...] = ()
    exhausted: tuple[str, ...] = ()
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """A credential's cooldown, failure streak and window statuses."""

    credential_id: str
    cooldown_until_ms: int
    streak: int
    windows: tuple[QuotaStatus, ...] = field(default=())


class CredentialSelector:
    """AcquireCredential, SettleCredential, ReportCredentialFailure and GetCredentialStates."""

    def __init__(self, limiter: Limiter, cooldowns: CooldownStore) -> None:
        self._limiter = limiter
        self._cooldowns = cooldowns

    async def acquire(
        self, reservation_id: str, candidates: Sequence[Candidate], estimated_tokens: int, ttl_ms: int
    ) -> Choice:
        """Reserve one request and ``estimated_tokens`` on the best usable candidate's windows.

        Raises BackendUnavailable when the cooldowns cannot be read (the Limiter applies the outage
        policy to the windows themselves).
        """
        states = await self._cooldowns.states([c.credential_id for c in candidates])
        cooling: list[str] = []
        exhausted: list[str] = []
        waits: list[int] = []
        # sorted() is stable: equal priorities keep the caller's order.
        for candidate, state in sorted(zip(candidates, states, strict=True), key=lambda p: p[0].priority):
            if state.until_ms > state.now_ms:
                cooling.append(candidate.credential_id)
                waits.append(state.until_ms - state.now_ms)
                continue
            limits = DescriptorLimits(credential_descriptor(candidate.credential_id), candidate.quotas)
            request = AcquireRequest(reservation_id, (limits,), Amounts(requests=1, tokens=estimated_tokens), ttl_ms)
            decision = await self._limiter.acquire(request)
            if decision.allowed:
                return Choice(
                    candidate.credential_id,
                    cooling_down=tuple(cooling),
                    exhausted=tuple(exhausted),
                    degraded=decision.degraded,
                )
            exhausted.append(candidate.credential_id)
            if decision.retry_after_ms is not None:
                waits.append(decision.retry_after_ms)
        return Choice(
            None,
            retry_after_ms=min(waits) if waits else None,
            cooling_down=tuple(cooling),
            exhausted=tuple(exhausted),
        )

    async def settle(self, reservation_id: str, actual: Amounts, succeeded_credential_id: str) -> bool:
        """Settle a credential reservation; a success ends that credential's failure streak."""
        found = await self._limiter.settle(reservation_id, actual)
        if succeeded_credential_id:
            await self._cooldowns.succeed(succeeded_credential_id)
        return found

    async def fail(self, credential_id: str, retry_after_ms: int) -> CooldownState:
        """Start the cooldown a refusal earns."""
        return await self._cooldowns.fail(credential_id, retry_after_ms)

    async def states(self, credentials: Sequence[Candidate]) -> list[RuntimeState]:
        """Each credential's runtime state, its windows read without counting anything."""
        cooldowns = await self._cooldowns.states([c.credential_id for c in credentials])
        out: list[RuntimeState] = []
        for candidate, cooldown in zip(credentials, cooldowns, strict=True):
            windows: tuple[QuotaStatus, ...] = ()
            if candidate.quotas:
                limits = DescriptorLimits(credential_descriptor(candidate.credential_id), candidate.quotas)
                peek = AcquireRequest(
                    f"peek:{candidate.credential_id}:{cooldown.now_ms}", (limits,), Amounts(), _PEEK_TTL_MS
                )
                windows = (await self._limiter.acquire(peek)).statuses
            until = cooldown.until_ms if cooldown.until_ms > cooldown.now_ms else 0
            out.append(RuntimeState(candidate.credential_id, until, cooldown.streak, windows))
        return out
