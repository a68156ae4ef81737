"""Lua scripts for what the provider says under ``refill="auto"`` in Redis: a header reading
applied to the shared state (``READING``; what a 429 teaches: ``_refused_scripts``), the
shape a process learned published for every process (``PUBLISH``) in the key's shape HASH
(``_auto_scripts``), and every quota used up (``SPENT``: a run resumed after a kill)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..._core import clock
from ._auto_scripts import LIMITS, SHAPE_TTL
from ._bucket_scripts import PRELUDE
from ._fixed_scripts import FLIP

__all__ = ["PUBLISH", "READING", "SPENT", "dated", "publish"]

#: KEYS: shape, state. ARGV: kind, epoch - now at the sender ('' none), lims, why, late ('1': a
#: fixed window that counts a request late, ``shape.Shape.late``; '' not), when an answer showed
#: its current window, less now ('': none; ``_fixed_scripts.FLIP``), the seconds after the
#: boundary the server's may lie (``shape.Shape.doubt``; '' unknown). Records what
#: a process learned (a new version) for every process's next reservation. The caps read under
#: the window assumption go (a bucket's readings drain it instead: a cap until its reset, the
#: time to refill it all, would hold it empty that long), but not one read under the shape
#: published (``ck_r``/``ck_t``, ``READING``): the reading a process learned it from caps after
#: learning in memory (``window.Window.cap``), and its write may land before this one (dropped,
#: the requests the server said it had counted were given back by their refunds, #30); a fixed
#: window also drops the pause (it resumes at its boundaries, as ``learn.become_fixed``).
#: Returns the new version.
PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.17g', x) end
local epoch = ARGV[2] ~= '' and fmt(now + tonumber(ARGV[2])) or ''
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'epoch', epoch, 'lims', ARGV[3], 'why', ARGV[4],
           'late', ARGV[5] or '', 'doubt', ARGV[7] or '')
redis.call('PEXPIRE', KEYS[1], """ + str(SHAPE_TTL * 1000) + """)
if ARGV[1] == 'bucket' or ARGV[1] == 'fixed' then
  for _, u in ipairs({'r', 't'}) do
    if redis.call('HGET', KEYS[2], 'ck_' .. u) ~= ARGV[1] then redis.call('HDEL', KEYS[2], 'until_' .. u) end
  end
end
if ARGV[1] == 'fixed' then redis.call('HDEL', KEYS[2], 'pause') end
if (ARGV[6] or '') ~= '' and redis.call('PTTL', KEYS[2]) > 0 then  -- ``_fixed_scripts.FLIP``
  local flip = fmt(now + tonumber(ARGV[6]))
  redis.call('HSET', KEYS[2], 'flip_r', flip, 'flip_t', flip)
end
return v
"""

#: KEYS: state, log, shape. ARGV: is_tokens ('1' or '0'; 'f' after it: the reading showed this
#: process a late clock window's start, ``_fixed_scripts.FLIP``; 'F' or 'B': it read it under a
#: fixed window or a bucket it has learned, maybe from this reading, whose publication
#: (``PUBLISH``) may land after this: a bucket's level set, or a cap kept by it, as in memory),
#: remaining, reset seconds ('' none),
#: the log member of the request the reading counted ('' unknown: as of now), the reading's age
#: (seconds since it was read: a write retried after a timeout lands late, ``Connection.keep``;
#: a cap read before the one set, ``rt_r``/``rt_t``, is older and changes nothing), then the
#: limit/window/is_tokens/learns/margin per quota. A reading ends a silent server's probing
#: (``_silent``) and may show a late clock window's start (``_fixed_scripts.FLIP``).
#: ``reading.Readings`` on the shared log: the server counted ``remaining`` as it admitted that request, and what any process admitted
#: from a margin before it on (the ticket excepted) may have arrived after it, so one reading
#: leaves at least ``remaining`` less those; readings of one burst (tickets each within a margin
#: of the group's latest: a burst admitted through Redis takes longer than a margin) bound the
#: same quantity, so the group's best bound holds, less what was admitted since (``n_r``/``n_t``:
#: units admitted so far; ``g*_r``/``g*_t``: the group's latest ticket, bound, when read and
#: units admitted then). Under a learned bucket, each
#: bucket of the unit then holds no more than that plus its refill since; otherwise a cap
#: until the reset. A reading of an older burst than the group's changes nothing.
READING = PRELUDE + """
local log, unit = KEYS[2], string.sub(ARGV[1], 1, 1)
local read_at = now - tonumber(ARGV[5])
local under = string.find(ARGV[1], 'B', 2, true) and 'bucket' or string.find(ARGV[1], 'F', 2, true) and 'fixed' or ''

local tok = unit == '1'
local remaining, reset = tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('HGET', KEYS[3], 'sq') ~= '0' then  -- heard: no silent probe from now (``_silent``)
  redis.call('HSET', KEYS[3], 'sq', '0')
  redis.call('HDEL', KEYS[3], 'sp', 'ss')
  redis.call('PEXPIRE', KEYS[3], """ + str(SHAPE_TTL * 1000) + """)
end
if not reset and redis.call('HSETNX', KEYS[3], 'noreset', '1') == 1 then
  -- a clock window may be supposed (``learn.observe``): calls' ends are kept from now (``done``)
  redis.call('PEXPIRE', KEYS[3], """ + str(SHAPE_TTL * 1000) + """)
end
local at = ARGV[4] ~= '' and tonumber(redis.call('ZSCORE', log, ARGV[4]) or '') or nil
local u = tok and 't' or 'r'
local skew = 0
for i = 6, #ARGV, 5 do skew = math.max(skew, tonumber(ARGV[i + 4])) end
local issued = tonumber(redis.call('HGET', state, 'n_' .. u) or '0')
local left, since = remaining, read_at
if not at then
  redis.call('HDEL', state, 'ga_' .. u, 'gb_' .. u, 'gs_' .. u, 'gc_' .. u)
else
  local after = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, fmt(at - skew), '+inf')) do
    if m ~= ARGV[4] then after = after + (tok and tonumber(string.match(m, ':(%d+)$')) or 1) end
  end
  left = remaining - after
  local g = redis.call('HMGET', state, 'ga_' .. u, 'gb_' .. u, 'gs_' .. u, 'gc_' .. u)
  local anchor, best, read, counted = tonumber(g[1] or ''), tonumber(g[2] or ''), tonumber(g[3] or ''), tonumber(g[4] or '')
  local aged = nil
  if anchor and counted <= issued and at <= anchor + skew then
    if at < anchor - skew then return 0 end  -- an older burst's reading: the group's are newer
    aged = best - (issued - counted)
    anchor = math.max(anchor, at)
  else
    anchor = at
  end
  if aged and aged >= left then
    left, since = aged, read
    redis.call('HSET', state, 'ga_' .. u, fmt(anchor))
  else
    redis.call('HSET', state, 'ga_' .. u, fmt(anchor), 'gb_' .. u, fmt(left), 'gs_' .. u, fmt(read_at),
               'gc_' .. u, fmt(issued))
  end
end
""" + FLIP + """
if redis.call('HGET', KEYS[3], 'kind') == 'bucket' or under == 'bucket' then
  local lims = redis.call('HGET', KEYS[3], 'lims') or ''
""" + LIMITS + """
  local n = 0
  for i = 6, #ARGV, 5 do
    n = n + 1
    if ARGV[i + 2] == unit and ARGV[i + 3] == '1' then
      local cap = limit_of(n, tonumber(ARGV[i]))
      local rate = cap / tonumber(ARGV[i + 1])
      local level, deficit, outstanding = load(n, cap, rate)
      local most = left + math.max(0, now - since) * rate
      if level > most then store(n, cap, rate, most, deficit, outstanding) end
    end
  end
  if ttl > 0 then expire() end
  return 1
end
if not reset then return 0 end
-- read before the cap's reading (a retry landing late): that one is newer
if read_at < (tonumber(redis.call('HGET', state, 'rt_' .. u) or '') or -math.huge) then return 0 end
-- it counts ours admitted from its request's burst on, but for that request (``_scripts.UNCAP``)
redis.call('HSET', state, 'cap_' .. u, fmt(math.max(left, 0)), 'until_' .. u, fmt(read_at + reset),
           'cf_' .. u, fmt(at and at - skew or read_at), 'cb_' .. u, at and string.match(ARGV[4], '^[^:]+') or '',
           'ck_' .. u, under, 'rt_' .. u, fmt(read_at))
local ms = math.ceil(reset * 1000) + 1000
if redis.call('PTTL', state) < ms then redis.call('PEXPIRE', state, ms) end
return 1
"""

#: KEYS: state, shape. ARGV: its age (seconds since it was found: a write retried after a
#: timeout lands late, ``Connection.keep``), then limit/window/is_tokens/learns/margin per
#: quota. Every quota used up as of then, as ``window.Window.spent``: each bucket empty (at the
#: learned limits; its refill since kept), each unit capped at nothing for its longest window,
#: no reading group open (``READING``).
SPENT = PRELUDE + """
local lims = redis.call('HGET', KEYS[2], 'lims') or ''
""" + LIMITS + """
local at = now - tonumber(ARGV[1])
local n, span = 0, {}
for i = 2, #ARGV, 5 do
  n = n + 1
  local cap, window, u = limit_of(n, tonumber(ARGV[i])), tonumber(ARGV[i + 1]), ARGV[i + 2] == '1' and 't' or 'r'
  local rate = cap / window
  local level, deficit, outstanding = load(n, cap, rate)
  store(n, cap, rate, math.min(level, (now - at) * rate), deficit, outstanding)
  span[u] = math.max(span[u] or 0, window)
end
for u, window in pairs(span) do
  redis.call('HSET', state, 'cap_' .. u, 0, 'until_' .. u, fmt(at + window), 'cf_' .. u, fmt(at), 'cb_' .. u, '', 'ck_' .. u, '')
  redis.call('HDEL', state, 'ga_' .. u, 'gb_' .. u, 'gs_' .. u, 'gc_' .. u)
end
expire()
return 1
"""


def dated(head: list[Any], args: list[Any]) -> Callable[[], list[Any] | None]:
    """``READING``'s or ``SPENT``'s arguments, made at each attempt of a kept write (a retry
    lands late): ``head``, the seconds since now, then ``args`` (``RedisLearning.args``: the
    horizon, then the quotas'); None once the horizon has passed: stale, its retries end."""
    (horizon, *per_quota), at = args, clock.now()
    return lambda: None if clock.now() - at > horizon else [
        *head, repr(clock.now() - at), *per_quota]


async def publish(connection: Any, names: list[str], learned: Any, flip: str) -> Any:
    """Publish ``learned`` (``shared.Learned``, its epoch in loop time; ``flip``:
    ``shared.flip_of``) for every process: PUBLISH's reply (None: Redis out, on_error local)."""
    kind, epoch, limits, why, late, doubt = learned
    rel = "" if epoch is None else repr(epoch - asyncio.get_running_loop().time())
    return await connection.call(
        PUBLISH, [names[3], names[1]],
        [kind, rel, ",".join(map(str, limits)), why, "1" if late else "", flip,
         "" if doubt is None else repr(doubt)], "sharing the learned shape")
