"""Counters in Redis, shared by every replica: one Lua script per operation, on Redis's clock.

Each Acquire, Settle and RenewLeases is one EVALSHA: the script reads TIME, derives the calendar windows,
checks and writes everything, so no two replicas can interleave and no replica's clock matters.

Keys (``<p>`` is the prefix, ``<d>`` the escaped descriptor id, which contains no ':'):
- ``<p>c:<d>:<unit>:<window>:<window start>`` — a counter (string integer), expiring
  :data:`COUNTER_GRACE_S` after its window ends;
- ``<p>s:<d>`` — the reservations holding a capped descriptor's slots (sorted set scored by expiry in
  ms, pruned by the scripts, so a reservation never settled frees its slot when it expires);
- ``<p>r:<reservation id>`` — a pending reservation (msgpack: amounts, counter keys, units, window
  ends, slot keys), expiring with the reservation's lease; a renewal moves that expiry and the slot
  entries' scores together.
- ``<p>restored`` — the marker that the counters were rebuilt from the ledger. A Redis that restarted
  empty has none, and (with ``require_marker``) Acquire then reserves nothing and says so, until the
  day and month counters are rebuilt (:mod:`services.ratelimit.rebuild`).

Counter keys are built inside the script (their window start comes from TIME), so the scripts need a
single Redis server (or a proxy that routes undeclared keys); Redis Cluster is not supported.
Requires Redis >= 6.2 (SET ... KEEPTTL / PXAT).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.ratelimit.quotas import COUNTER_GRACE_S, Amounts, Decision, Outcome, Plan, decide
from services.ratelimit.storage.base import BackendUnavailable, CountersLost, RestoredCounter

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# Calendar math on Redis's clock; must agree with quotas.window_bounds (a test checks it).
# days_from_civil / civil_from_days are Howard Hinnant's algorithms, on whole days since 1970-01-01.
WINDOW_LUA = """
local function days_from_civil(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5)
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

local function year_month(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local y, m = yoe + era * 400, mp + 3
  if mp >= 10 then m = mp - 9; y = y + 1 end
  return y, m
end

local function bounds(window, now)
  if window == '1' then local s = now - now % 60; return s, s + 60 end
  if window == '2' then local s = now - now % 86400; return s, s + 86400 end
  local y, m = year_month(math.floor(now / 86400))
  local s = days_from_civil(y, m) * 86400
  if m == 12 then y, m = y + 1, 1 else m = m + 1 end
  return s, days_from_civil(y, m) * 86400
end
"""

# KEYS[1] the reservation, KEYS[2..] the slot set of each capped descriptor.
# ARGV: reservation id, ttl ms, #counters, #quotas, amounts (requests, tokens, cost), then per counter
# (key prefix, window, unit), per quota (counter index, limit), per slot its cap.
# Returns {outcome, now ms, used per counter..., in flight per slot..., epoch}, values before the
# decision; the epoch is the marker's value (EPOCH, set by the prefix: the guard or _NO_GUARD_LUA).
_ACQUIRE_LUA = (
    WINDOW_LUA
    + """
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local nc, nq, nz = tonumber(ARGV[3]), tonumber(ARGV[4]), #KEYS - 1
local amount = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local out = {0, now_ms}
local keys, units, ends, used, fresh, held = {}, {}, {}, {}, {}, {}
local p = 8
local starts, stops = {}, {}
for i = 1, nc do
  local w = ARGV[p + 1]
  if not starts[w] then starts[w], stops[w] = bounds(w, now_s) end
  keys[i], units[i], ends[i] = ARGV[p] .. starts[w], tonumber(ARGV[p + 2]), stops[w]
  p = p + 3
end
if nc > 0 then
  local values = redis.call('MGET', unpack(keys))
  for i = 1, nc do
    fresh[i] = not values[i]
    used[i] = tonumber(values[i] or '0')
    out[2 + i] = used[i]
  end
end
for z = 1, nz do
  redis.call('ZREMRANGEBYSCORE', KEYS[z + 1], '-inf', now_ms)
  held[z] = redis.call('ZCARD', KEYS[z + 1])
  out[2 + nc + z] = held[z]
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  out[1] = 2
  out[#out + 1] = EPOCH
  return out
end
local ok = true
for _ = 1, nq do
  local a = amount[units[tonumber(ARGV[p])]]
  if a > 0 and used[tonumber(ARGV[p])] + a > tonumber(ARGV[p + 1]) then ok = false end
  p = p + 2
end
for z = 1, nz do
  if held[z] >= tonumber(ARGV[p]) then ok = false end
  p = p + 1
end
if not ok then
  out[#out + 1] = EPOCH
  return out
end
local ttl = tonumber(ARGV[2])
for i = 1, nc do
  local u = units[i]
  if amount[u] > 0 then
    redis.call('INCRBY', keys[i], ARGV[4 + u])
    if fresh[i] then redis.call('PEXPIREAT', keys[i], (ends[i] + GRACE) * 1000) end
  end
end
local zkeys = {}
for z = 1, nz do
  local zk = KEYS[z + 1]
  redis.call('ZADD', zk, now_ms + ttl, ARGV[1])
  if redis.call('PTTL', zk) < ttl then redis.call('PEXPIRE', zk, ttl) end
  zkeys[z] = zk
end
redis.call('SET', KEYS[1], cmsgpack.pack(amount, keys, units, ends, zkeys), 'PX', ttl)
out[1] = 1
out[#out + 1] = EPOCH
return out
""".replace("GRACE", str(COUNTER_GRACE_S))
)

# KEYS[1] the reservation. ARGV: reservation id, actual requests, tokens, cost. Returns 1 if found.
_SETTLE_LUA = """
local rec = redis.call('GET', KEYS[1])
if not rec then return 0 end
redis.call('DEL', KEYS[1])
local reserved, keys, units, ends, zkeys = cmsgpack.unpack(rec)
local now_s = tonumber(redis.call('TIME')[1])
local delta = {tonumber(ARGV[2]) - reserved[1], tonumber(ARGV[3]) - reserved[2],
  tonumber(ARGV[4]) - reserved[3]}
for i = 1, #keys do
  local d = delta[units[i]]
  if d ~= 0 then
    local v = redis.call('GET', keys[i])
    if v then
      v = tonumber(v) + d
      if v < 0 then v = 0 end
      redis.call('SET', keys[i], string.format('%.0f', v), 'KEEPTTL')
    elseif d > 0 and ends[i] > now_s then
      -- The estimate was 0 for this unit, so the window's counter was never created.
      redis.call('SET', keys[i], string.format('%.0f', d), 'PXAT',
        string.format('%.0f', (ends[i] + GRACE) * 1000))
    end
  end
end
for z = 1, #zkeys do redis.call('ZREM', zkeys[z], ARGV[1]) end
return 1
""".replace("GRACE", str(COUNTER_GRACE_S))

# KEYS[i] the reservation of ARGV[i + 1]; ARGV[1] the new lease in ms. Returns the indexes (1-based)
# of the reservations not pending (an expired record is deleted). Slot entries are moved only where
# they still exist (XX), so a renewal never takes a slot the reservation no longer holds.
_RENEW_LUA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local missing = {}
for i = 1, #KEYS do
  local rec = redis.call('GET', KEYS[i])
  local zkeys = {}
  local alive = rec and redis.call('PTTL', KEYS[i]) > 0
  if alive then
    zkeys = select(5, cmsgpack.unpack(rec))
    -- A slot entry past its score is expired even if Redis has not yet expired the record (both
    -- fall due in the same millisecond): renewing it would bring back a reservation without a slot.
    for z = 1, #zkeys do
      local score = redis.call('ZSCORE', zkeys[z], ARGV[i + 1])
      if not score or tonumber(score) <= now_ms then alive = false end
    end
  end
  if not alive then
    if rec then redis.call('DEL', KEYS[i]) end
    missing[#missing + 1] = i
  else
    redis.call('PEXPIRE', KEYS[i], ttl)
    for z = 1, #zkeys do
      local zk = zkeys[z]
      redis.call('ZADD', zk, 'XX', now_ms + ttl, ARGV[i + 1])
      if redis.call('PTTL', zk) < ttl then redis.call('PEXPIRE', zk, ttl) end
    end
  end
end
return missing
"""


# Prepended to the Acquire script when the store requires rebuilt counters: without the marker,
# answer LOST before reading or writing anything. MARKER is replaced by the key as a Lua string.
# The marker's value (unique per rebuild) is the counters' epoch: a Redis restarted empty and
# rebuilt has a new one.
_GUARD_LUA = """
local EPOCH = redis.call('GET', MARKER)
if not EPOCH then return {LOST, 0} end
"""

# Prepended instead when no marker is required: the store cannot tell a generation of counters.
_NO_GUARD_LUA = """
local EPOCH = ''
"""

_LOST = 3
"""What the guarded Acquire script answers when the counters are lost."""

# KEYS[1] the marker. ARGV: the marker's value, then per counter (key, value, expire-at ms).
# Raises each counter to at least its value and sets the marker, unless another replica set it first.
_RESTORE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 3 do
  local current = tonumber(redis.call('GET', ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('SET', ARGV[i], ARGV[i + 1], 'PXAT', ARGV[i + 2])
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RedisStore:
    """Counters in Redis; every method is one round trip. Connection failures become
    :class:`BackendUnavailable`.

    With ``require_marker``, Acquire raises :class:`CountersLost` while the counters are not rebuilt
    (the service sets it; tests of the counting itself leave it off).
    """

    def __init__(self, client: Redis, prefix: str = "gw:rl:", *, require_marker: bool = False) -> None:
        self._client = client
        self._prefix = prefix
        self._marker = f"{prefix}restored"
        guard = _GUARD_LUA.replace("LOST", str(_LOST)).replace("MARKER", _lua_string(self._marker))
        # redis-py sends EVALSHA and loads the script on NOSCRIPT (e.g. after a Redis restart).
        self._acquire = client.register_script((guard if require_marker else _NO_GUARD_LUA) + _ACQUIRE_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._renew = client.register_script(_RENEW_LUA)
        self._restore = client.register_script(_RESTORE_LUA)

    async def acquire(self, plan: Plan) -> Decision:
        """See :meth:`LimitStore.acquire`."""
        request = plan.request
        amounts = request.amounts
        prefix = self._prefix
        keys = [f"{prefix}r:{request.reservation_id}", *(f"{prefix}s:{s.descriptor_id}" for s in plan.slots)]
        args: list[str | int] = [
            request.reservation_id,
            request.ttl_ms,
            len(plan.counters),
            len(plan.quotas),
            amounts.requests,
            amounts.tokens,
            amounts.cost_micro_usd,
        ]
        for counter in plan.counters:
            unit, window = counter.unit.value, counter.window.value
            args += [f"{prefix}c:{counter.descriptor_id}:{unit}:{window}:", window, unit]
        for ref in plan.quotas:
            args += [ref.counter + 1, ref.quota.limit]
        args += [slot.cap for slot in plan.slots]
        try:
            reply = cast(list[Any], await self._acquire(keys=keys, args=args))
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        if reply[0] == _LOST:
            raise CountersLost("the rate limit counters in Redis are lost (no marker); rebuilding")
        nc = len(plan.counters)
        decision = decide(
            plan,
            outcome=Outcome(reply[0]),
            now_ms=reply[1],
            used=reply[2 : 2 + nc],
            in_flight=reply[2 + nc : -1],
        )
        epoch = reply[-1]
        return replace(decision, epoch=epoch.decode() if isinstance(epoch, bytes) else str(epoch))

    async def settle(self, reservation_id: str, actual: Amounts) -> bool:
        """See :meth:`LimitStore.settle`."""
        keys = [f"{self._prefix}r:{reservation_id}"]
        args: list[str | int] = [reservation_id, actual.requests, actual.tokens, actual.cost_micro_usd]
        try:
            found: Any = await self._settle(keys=keys, args=args)
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        return bool(found)

    async def renew(self, reservation_ids: Sequence[str], ttl_ms: int) -> list[str]:
        """See :meth:`LimitStore.renew`."""
        if not reservation_ids:
            return []
        keys = [f"{self._prefix}r:{reservation_id}" for reservation_id in reservation_ids]
        args: list[str | int] = [ttl_ms, *reservation_ids]
        try:
            missing = cast(list[int], await self._renew(keys=keys, args=args))
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        return [reservation_ids[i - 1] for i in missing]

    async def counters_lost(self) -> bool:
        """See :meth:`LimitStore.counters_lost`."""
        try:
            return not await self._client.exists(self._marker)
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def restore(self, counters: Sequence[RestoredCounter]) -> bool:
        """See :meth:`LimitStore.restore`."""
        # Unique per rebuild: the marker's value is the epoch of the counters it vouches for.
        args: list[str | int] = [f"{int(time.time())}-{uuid.uuid4().hex}"]
        for c in counters:
            key = f"{self._prefix}c:{c.descriptor_id}:{c.unit.value}:{c.window.value}:{c.window_start_s}"
            args += [key, c.value, (c.window_end_s + COUNTER_GRACE_S) * 1000]
        try:
            return bool(await self._restore(keys=[self._marker], args=args))
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        """See :meth:`LimitStore.ping`."""
        try:
            await self._client.ping()
        except _UNREACHABLE as exc:
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
