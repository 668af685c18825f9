"""Cooldowns of upstream credentials the upstream refused (429, 401): memory and Redis backends.

A failure lengthens the credential's failure streak and puts it into a cooldown of
``min(cap, base * 2 ** (streak - 1))``, at least the upstream's Retry-After; a success ends the
streak (and any cooldown). A streak nobody added to for ``forget_ms`` after its cooldown ended is
forgotten, so that a credential that failed once long ago starts from the base again.

On Redis each operation is one Lua script on Redis's clock (``<p>cd:<escaped id>``: a hash of the
streak ``f`` and the cooldown end ``u`` in ms, expiring ``forget_ms`` after ``u``), so replicas
sharing Redis agree on every cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.ratelimit.storage.base import BackendUnavailable

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

_SWEEP_AT = 10_000
"""The memory store drops forgotten streaks once it holds this many."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """The exponential cooldown: ``base_ms`` after the first failure, doubling up to ``cap_ms``."""

    base_ms: int = 1_000
    cap_ms: int = 300_000
    forget_ms: int = 3_600_000

    def cooldown_ms(self, streak: int, retry_after_ms: int) -> int:
        """The cooldown after the ``streak``-th consecutive failure."""
        exponent = min(max(streak - 1, 0), 40)
        backoff_ms: int = min(self.cap_ms, self.base_ms * (1 << exponent))
        return max(backoff_ms, retry_after_ms)


class CooldownState(NamedTuple):
    """A credential's cooldown end (epoch ms; 0 for none) and failure streak, and the backend's now."""

    until_ms: int
    streak: int
    now_ms: int


class CooldownStore(Protocol):
    """Cooldowns keyed by credential id, each operation atomic."""

    async def fail(self, credential_id: str, retry_after_ms: int) -> CooldownState:
        """Add a failure to the streak and start the cooldown it earns; raises BackendUnavailable."""
        ...

    async def succeed(self, credential_id: str) -> None:
        """End the streak and any cooldown; raises BackendUnavailable."""
        ...

    async def states(self, credential_ids: Sequence[str]) -> list[CooldownState]:
        """The state of each credential (zeros when it has none); raises BackendUnavailable."""
        ...


class MemoryCooldowns:
    """Cooldowns in a dict, for one replica; injectable clock (epoch seconds)."""

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.time) -> None:
        self._backoff = backoff
        self._clock = clock
        self._entries: dict[str, tuple[int, int]] = {}  # id -> (streak, until ms)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _get(self, credential_id: str, now_ms: int) -> tuple[int, int]:
        streak, until_ms = self._entries.get(credential_id, (0, 0))
        if streak and until_ms + self._backoff.forget_ms <= now_ms:
            del self._entries[credential_id]
            return 0, 0
        return streak, until_ms

    async def fail(self, credential_id: str, retry_after_ms: int) -> CooldownState:
        """See :meth:`CooldownStore.fail`."""
        now_ms = self._now_ms()
        if len(self._entries) >= _SWEEP_AT:
            # Streaks nobody read again would otherwise stay forever.
            forget = self._backoff.forget_ms
            self._entries = {k: v for k, v in self._entries.items() if v[1] + forget > now_ms}
        streak = self._get(credential_id, now_ms)[0] + 1
        until_ms = now_ms + self._backoff.cooldown_ms(streak, retry_after_ms)
        self._entries[credential_id] = (streak, until_ms)
        return CooldownState(until_ms, streak, now_ms)

    async def succeed(self, credential_id: str) -> None:
        """See :meth:`CooldownStore.succeed`."""
        self._entries.pop(credential_id, None)

    async def states(self, credential_ids: Sequence[str]) -> list[CooldownState]:
        """See :meth:`CooldownStore.states`."""
        now_ms = self._now_ms()
        out: list[CooldownState] = []
        for credential_id in credential_ids:
            streak, until_ms = self._get(credential_id, now_ms)
            out.append(CooldownState(until_ms, streak, now_ms))
        return out


# KEYS[1] the credential's hash. ARGV: retry-after ms, base ms, cap ms, forget ms.
_FAIL_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local streak = redis.call('HINCRBY', KEYS[1], 'f', 1)
local exponent = math.min(streak - 1, 40)
local cooldown = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ exponent)
cooldown = math.max(cooldown, tonumber(ARGV[1]))
local untl = now + cooldown
redis.call('HSET', KEYS[1], 'u', string.format('%d', untl))
redis.call('PEXPIREAT', KEYS[1], string.format('%d', untl + tonumber(ARGV[4])))
return {string.format('%d', untl), streak, string.format('%d', now)}
"""

# KEYS: the credentials' hashes. Returns now ms, then per key its cooldown end and streak.
_STATES_LUA = """
local t = redis.call('TIME')
local out = {string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'u', 'f')
  out[#out + 1] = v[1] or '0'
  out[#out + 1] = v[2] or '0'
end
return out
"""


class RedisCooldowns:
    """Cooldowns in Redis, shared by every replica (see the module docstring for the keys)."""

    def __init__(self, client: Redis, backoff: Backoff, prefix: str = "gw:rl:") -> None:
        self._client = client
        self._backoff = backoff
        self._prefix = f"{prefix}cd:"
        self._fail = client.register_script(_FAIL_LUA)
        self._states = client.register_script(_STATES_LUA)

    def _key(self, credential_id: str) -> str:
        # Ids are opaque to this service: escape them into one key segment.
        return self._prefix + credential_id.encode().hex()

    async def fail(self, credential_id: str, retry_after_ms: int) -> CooldownState:
        """See :meth:`CooldownStore.fail`."""
        b = self._backoff
        args = [retry_after_ms, b.base_ms, b.cap_ms, b.forget_ms]
        try:
            until, streak, now = cast(list[bytes | int], await self._fail(keys=[self._key(credential_id)], args=args))
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        return CooldownState(int(until), int(streak), int(now))

    async def succeed(self, credential_id: str) -> None:
        """See :meth:`CooldownStore.succeed`."""
        try:
            await self._client.delete(self._key(credential_id))
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def states(self, credential_ids: Sequence[str]) -> list[CooldownState]:
        """See :meth:`CooldownStore.states`."""
        if not credential_ids:
            return []
        keys = [self._key(i) for i in credential_ids]
        try:
            reply = cast(list[bytes], await self._states(keys=keys, args=[]))
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        now_ms = int(reply[0])
        return [CooldownState(int(reply[i]), int(reply[i + 1]), now_ms) for i in range(1, len(reply), 2)]
