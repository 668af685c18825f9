"""The protocol every counter backend implements, and the one failure it may raise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from services.ratelimit.quotas import Amounts, Decision, Plan, Unit, Window


class BackendUnavailable(Exception):
    """The backend could not be reached (connection refused, reset, timed out); nothing is known
    about whether the operation took effect."""


class CountersLost(Exception):
    """The backend lost its counters (Redis restarted empty, or evicted the marker): nothing was
    reserved, and nothing may be until they are rebuilt from the ledger."""


class RestoredCounter(NamedTuple):
    """A counter's value rebuilt from the ledger, for one window."""

    descriptor_id: str
    unit: Unit
    window: Window
    window_start_s: int
    window_end_s: int
    value: int


class LimitStore(Protocol):
    """Counters, reservations and concurrency slots, each operation atomic on its own.

    Window starts and reservation expiry follow the backend's own clock, so that every replica
    sharing a backend agrees on them.
    """

    async def acquire(self, plan: Plan) -> Decision:
        """Reserve the plan's amounts on every counter and slot, or on none.

        The decision carries the store's epoch: an id of the counters' generation that changes
        whenever they are lost and start again (empty or rebuilt), so that a router holding blocks
        reserved on the old counters can tell they are gone (empty when the store cannot tell).

        A reservation id that is still pending is not counted again (the answer is allowed, with
        the current statuses). Raises :class:`BackendUnavailable`, and :class:`CountersLost` when
        the store requires rebuilt counters and has none.
        """
        ...

    async def settle(self, reservation_id: str, actual: Amounts) -> bool:
        """Replace a pending reservation's amounts with ``actual`` on the counters it touched (never
        below zero), free its slots and forget it. False when it is unknown, expired or settled.
        Raises :class:`BackendUnavailable`."""
        ...

    async def renew(self, reservation_ids: Sequence[str], ttl_ms: int) -> list[str]:
        """Extend each pending reservation (and its slots) to expire ``ttl_ms`` from now, atomically.

        Returns the ids that are not pending (unknown, expired or settled); nothing is created for
        them. Raises :class:`BackendUnavailable`."""
        ...

    async def ping(self) -> None:
        """Return once the backend answers; raises :class:`BackendUnavailable`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def counters_lost(self) -> bool:
        """Whether the counters were never rebuilt since the store started empty (no marker).
        Raises :class:`BackendUnavailable`."""
        ...

    async def restore(self, counters: Sequence[RestoredCounter]) -> bool:
        """Raise each counter to at least its rebuilt value and set the marker, atomically; a store
        another replica already rebuilt is left alone (False). Raises :class:`BackendUnavailable`."""
        ...
