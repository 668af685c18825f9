"""Circuit breakers per deployment: closed, open for a cooldown, then half-open for one probe.

After ``failures`` retryable failures within ``window_s`` a deployment's breaker opens: for
``cooldown_s`` it is tried only when nothing else is left. Then it is half-open: the first request
that claims the probe tries it (a claim lasts ``probe_timeout_s``, so a probe that never reports
back does not hold it forever) and everyone else still skips it. A success closes the breaker; a
failure while half-open opens it again for another cooldown.

Two stores keep the same promise: :class:`MemoryBreakers` (one router) and :class:`RedisBreakers`
(every router sharing one Redis). The Redis store keeps a local copy of the breakers that are not
closed, refreshed every ``poll_s``; deciding a request's order reads only that copy, so a request
makes no Redis round trip unless a breaker it would use is half-open (the probe claim). Failures
are written through (they are off the happy path); a success is written only for a breaker the copy
shows as not closed. Every Redis call is bounded and its failure only logged: a breaker that cannot
reach Redis degrades to what its copy knows, never to a failed request.

Keys (``<p>`` the prefix): ``<p>tripped`` — hash deployment → the Redis-clock ms until which it is
open (present while open or half-open); ``<p>fail:<deployment>`` — failures in the current window
(expires with it); ``<p>probe:<deployment>`` — the probe claim (expires after ``probe_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class State(enum.Enum):
    """Where a deployment's breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class BreakerSettings:
    """When a breaker opens and how long it stays open."""

    failures: int = 3
    window_s: float = 60.0
    cooldown_s: float = 30.0
    probe_timeout_s: float = 30.0


class Breakers(Protocol):
    """The breakers of every deployment, keyed by ``provider:model``."""

    def state(self, deployment: str) -> State:
        """The breaker's state now (from a local copy: no I/O)."""
        ...

    async def claim_probe(self, deployment: str) -> bool:
        """Whether this request may send the one probe to a half-open deployment."""
        ...

    def record_failure(self, deployment: str) -> None:
        """The deployment failed with a retryable error."""
        ...

    def record_success(self, deployment: str) -> None:
        """The deployment answered."""
        ...


class MemoryBreakers:
    """Breakers in this process only."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._open_until: dict[str, float] = {}
        self._probe_until: dict[str, float] = {}

    def state(self, deployment: str) -> State:
        """The breaker's state now."""
        until = self._open_until.get(deployment)
        if until is None:
            return State.CLOSED
        return State.OPEN if self._clock() < until else State.HALF_OPEN

    async def claim_probe(self, deployment: str) -> bool:
        """True for the first caller while half-open, then not until the claim expires."""
        if self.state(deployment) is not State.HALF_OPEN:
            return False
        now = self._clock()
        if self._probe_until.get(deployment, -1.0) > now:
            return False
        self._probe_until[deployment] = now + self._settings.probe_timeout_s
        return True

    def record_failure(self, deployment: str) -> None:
        """Count the failure; open the breaker at the threshold, or again when half-open."""
        now = self._clock()
        state = self.state(deployment)
        if state is State.OPEN:
            return
        if state is State.HALF_OPEN:
            self._trip(deployment, now)
            return
        failures = self._failures.setdefault(deployment, deque())
        failures.append(now)
        while failures and failures[0] <= now - self._settings.window_s:
            failures.popleft()
        if len(failures) >= self._settings.failures:
            self._trip(deployment, now)

    def record_success(self, deployment: str) -> None:
        """Close the breaker if it was not closed."""
        if self._open_until.pop(deployment, None) is not None:
            self._probe_until.pop(deployment, None)
            self._failures.pop(deployment, None)

    def _trip(self, deployment: str, now: float) -> None:
        self._open_until[deployment] = now + self._settings.cooldown_s
        self._probe_until.pop(deployment, None)
        self._failures.pop(deployment, None)


# Returns {now_ms, open_until_ms or 0}. A failure while half-open (the probe's) re-opens at once.
_FAILURE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deployment, threshold = ARGV[1], tonumber(ARGV[2])
local window_ms, cooldown_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local open_until = tonumber(redis.call('HGET', KEYS[1], deployment) or '0')
if open_until > now then
  return {now, open_until}
end
local reopen = open_until > 0
if not reopen then
  local n = redis.call('INCR', KEYS[2])
  if n == 1 then redis.call('PEXPIRE', KEYS[2], window_ms) end
  reopen = n >= threshold
end
if reopen then
  redis.call('HSET', KEYS[1], deployment, now + cooldown_ms)
  redis.call('DEL', KEYS[2], KEYS[3])
  return {now, now + cooldown_ms}
end
return {now, 0}
"""

# Returns {now_ms, deployment, open_until_ms, ...}: the breakers that are not closed.
_SNAPSHOT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local result = {now}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries do result[#result + 1] = entries[i] end
return result
"""

_REDIS_TIMEOUT_S = 0.5


class RedisBreakers:
    """Breakers shared by every router on one Redis, read from a local copy refreshed by polling."""

    def __init__(
        self,
        redis: Redis,
        settings: BreakerSettings,
        poll_s: float = 1.0,
        prefix: str = "gw:breaker:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._poll_s = poll_s
        self._prefix = prefix
        self._clock = clock
        # Deployments that are not closed -> the local-clock time until which they are open.
        self._open_until: dict[str, float] = {}
        self._failure = redis.register_script(_FAILURE_LUA)
        self._snapshot = redis.register_script(_SNAPSHOT_LUA)
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    def _local(self, now_ms: int, until_ms: int) -> float:
        """A Redis-clock deadline on this process's clock (Redis's clock is the one all routers share)."""
        return self._clock() + (until_ms - now_ms) / 1000

    def state(self, deployment: str) -> State:
        """The breaker's state as of the last refresh (or this router's own writes since)."""
        until = self._open_until.get(deployment)
        if until is None:
            return State.CLOSED
        return State.OPEN if self._clock() < until else State.HALF_OPEN

    async def claim_probe(self, deployment: str) -> bool:
        """One router's one request wins the claim (SET NX with the probe timeout)."""
        if self.state(deployment) is not State.HALF_OPEN:
            return False
        try:
            claimed = await asyncio.wait_for(
                self._redis.set(
                    f"{self._prefix}probe:{deployment}",
                    "1",
                    nx=True,
                    px=max(1, int(self._settings.probe_timeout_s * 1000)),
                ),
                _REDIS_TIMEOUT_S,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            # Without Redis nobody can coordinate the probe: let this request probe rather than
            # keep the deployment out for as long as Redis is away.
            log.warning("breaker probe claim failed: %s", exc)
            return True
        return bool(claimed)

    def record_failure(self, deployment: str) -> None:
        """Write the failure through to Redis, in the background."""
        self._spawn(self._write_failure(deployment))

    def record_success(self, deployment: str) -> None:
        """Close the breaker, locally at once and in Redis in the background, if it was not closed."""
        if self._open_until.pop(deployment, None) is not None:
            self._spawn(self._write_success(deployment))

    async def refresh(self) -> None:
        """Replace the local copy with Redis's breakers."""
        reply = cast(list[Any], await asyncio.wait_for(self._snapshot(keys=[self._tripped]), _REDIS_TIMEOUT_S))
        now_ms = int(reply[0])
        entries = [_text(item) for item in reply[1:]]
        self._open_until = {entries[i]: self._local(now_ms, int(entries[i + 1])) for i in range(0, len(entries) - 1, 2)}

    async def flush(self) -> None:
        """Wait for the writes in flight (tests, and shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def start(self) -> None:
        """Start polling Redis for the breakers other routers opened or closed."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """Stop polling and finish the writes in flight."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self.flush()

    @property
    def _tripped(self) -> str:
        return f"{self._prefix}tripped"

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("breaker refresh failed: %s", exc)
            await asyncio.sleep(self._poll_s)

    async def _write_failure(self, deployment: str) -> None:
        settings = self._settings
        reply = cast(
            list[Any],
            await asyncio.wait_for(
                self._failure(
                    keys=[self._tripped, f"{self._prefix}fail:{deployment}", f"{self._prefix}probe:{deployment}"],
                    args=[
                        deployment,
                        settings.failures,
                        max(1, int(settings.window_s * 1000)),
                        max(1, int(settings.cooldown_s * 1000)),
                    ],
                ),
                _REDIS_TIMEOUT_S,
            ),
        )
        now_ms, until_ms = int(reply[0]), int(reply[1])
        if until_ms:
            self._open_until[deployment] = self._local(now_ms, until_ms)

    async def _write_success(self, deployment: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self._tripped, deployment)
        pipe.delete(f"{self._prefix}probe:{deployment}", f"{self._prefix}fail:{deployment}")
        await asyncio.wait_for(pipe.execute(), _REDIS_TIMEOUT_S)

    def _spawn(self, write: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(self._logged(write))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(write: Any) -> None:
        try:
            await write
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("breaker write failed: %s", exc)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
