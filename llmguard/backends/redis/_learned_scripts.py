"""Lua scripts for what the provider says under ``refill="auto"`` in Redis: a header reading
applied to the shared state (``READING``), and the shape a process learned published for every
process (``PUBLISH``) in the key's shape HASH (``_auto_scripts``)."""

from __future__ import annotations

from ._auto_scripts import LIMITS, SHAPE_TTL
from ._bucket_scripts import PRELUDE

__all__ = ["PUBLISH", "READING"]

#: KEYS: shape, state. ARGV: kind, epoch - now at the sender ('' none), lims, why. Records what
#: a process learned (a new version) for every process's next reservation; a fixed window
#: drops the caps and the pause read under the sliding assumption (it resumes at its
#: boundaries, as ``learn.become_fixed``). Returns the new version.
PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local epoch = ARGV[2] ~= '' and string.format('%.17g', now + tonumber(ARGV[2])) or ''
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'epoch', epoch, 'lims', ARGV[3], 'why', ARGV[4])
redis.call('PEXPIRE', KEYS[1], """ + str(SHAPE_TTL * 1000) + """)
if ARGV[1] == 'fixed' then redis.call('HDEL', KEYS[2], 'until_r', 'until_t', 'pause') end
return v
"""

#: KEYS: state, log, shape. ARGV: is_tokens ('1' or '0'), remaining, reset seconds ('' none),
#: the log member of the request the reading counted ('' unknown: as of now), then the
#: limit/window/is_tokens/learns/margin per quota. The server counted ``remaining`` as it
#: admitted that request; what every process admitted after it may not be counted yet, so it
#: is taken off (``reading.Readings`` in memory). Under a learned bucket, each bucket of the
#: unit holds no more than that plus its refill since; otherwise a cap until the reset, unless
#: a live cap was read from a request admitted later (answers come out of order; the latest
#: request's reading takes off fewer that the server may have counted already).
READING = PRELUDE + """
local log, tok = KEYS[2], ARGV[1] == '1'
local remaining, reset = tonumber(ARGV[2]), tonumber(ARGV[3])
local at = ARGV[4] ~= '' and tonumber(redis.call('ZSCORE', log, ARGV[4]) or '') or nil
local after = 0
if at then
  local later = redis.call('ZRANGEBYSCORE', log, '(' .. fmt(at), '+inf')
  for _, m in ipairs(later) do after = after + (tok and tonumber(string.match(m, ':(%d+)$')) or 1) end
end
local left = remaining - after
if redis.call('HGET', KEYS[3], 'kind') == 'bucket' then
  local lims = redis.call('HGET', KEYS[3], 'lims') or ''
""" + LIMITS + """
  local n = 0
  for i = 5, #ARGV, 5 do
    n = n + 1
    if ARGV[i + 2] == ARGV[1] and ARGV[i + 3] == '1' then
      local cap = limit_of(n, tonumber(ARGV[i]))
      local rate = cap / tonumber(ARGV[i + 1])
      local level, deficit, outstanding = load(n, cap, rate)
      local most = left + (at and math.max(0, now - at) * rate or 0)
      if level > most then store(n, cap, rate, most, deficit, outstanding) end
    end
  end
  if ttl > 0 then expire() end
  return 1
end
if not reset then return 0 end
local unit = tok and 't' or 'r'
local got = redis.call('HMGET', state, 'until_' .. unit, 'seen_' .. unit)
local newest = at or now
if tonumber(got[1] or '0') > now and tonumber(got[2] or '0') > newest then return 0 end
redis.call('HSET', state, 'cap_' .. unit, fmt(math.max(left, 0)), 'until_' .. unit, fmt(now + reset),
           'seen_' .. unit, fmt(newest))
local ms = math.ceil(reset * 1000) + 1000
if redis.call('PTTL', state) < ms then redis.call('PEXPIRE', state, ms) end
return 1
"""
