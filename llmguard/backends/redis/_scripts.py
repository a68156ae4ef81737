"""Server-side Lua scripts: every read-modify-write of shared state is one atomic script.

Redis runs a script without interleaving other commands, so the check "is there room?" and the
write "record the admission" cannot race between processes. Every script reads the clock with
``redis.call('TIME')`` (Redis >= 5 replicates script effects, so this is allowed before writes):
one clock for all processes, whatever their own clocks say. Floats are returned as strings
because Redis truncates Lua numbers to integers.
"""

from __future__ import annotations

from ._fence import FENCE

__all__ = ["ACQUIRE", "CAP", "CAPS", "PAUSE", "RECONCILE", "RELEASE", "RENEW", "RESERVE", "UNCAP"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

#: Lua: the provider caps (``until_r``/``cap_r``, ``_t``) of ``state``: ``capped`` units, the
#: longest ``cap_left``; a cap with no room for ``need`` makes ``wait`` reach its end (+ ``slack``),
#: and ``free`` holds no more than a cap leaves.
CAPS = """
local capped, cap_left = {}, 0
for key, name in pairs({[0] = 'r', [1] = 't'}) do
  local until_ = tonumber(redis.call('HGET', state, 'until_' .. name) or '0')
  if until_ > now then
    capped[name] = true
    cap_left = math.max(cap_left, until_ - now)
    local remaining = tonumber(redis.call('HGET', state, 'cap_' .. name))
    if remaining < (key == 1 and need or 1) then wait = math.max(wait, until_ - now + slack) end
    if free[key] == nil or remaining < free[key] then free[key] = remaining end
  end
end
"""


#: KEYS: log (ZSET member "ticket:tokens" scored by admission time), state (HASH: pause, caps),
#: fence (the marker HASH, ``_fence``). ARGV: member prefix, tokens, horizon (longest window),
#: slack, known marker, proposed marker, then limit/window/is_tokens triples. Returns {admitted,
#: wait, requests available, tokens available, pause left, seconds until the last provider cap
#: ends (the caller's cached headroom holds until then at least), marker}.
RESERVE = _NOW + """
local log, state = KEYS[1], KEYS[2]
local need, horizon, slack = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local fence, fence_for, known, proposed = KEYS[3], horizon, ARGV[5], ARGV[6]
""" + FENCE + """
if step > 0 then  -- the clock stepped back: old admissions must not count as future ones
  local all = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  for j = 1, #all, 2 do redis.call('ZADD', log, tonumber(all[j + 1]) - step, all[j]) end
  for _, field in ipairs({'pause', 'until_r', 'until_t'}) do
    local at = tonumber(redis.call('HGET', state, field) or '')
    if at then redis.call('HSET', state, field, tostring(at - step)) end
  end
end
if ready > now then  -- a restart lost the window: it counts as full until one has passed
  return {0, tostring(ready - now + slack), '0', '0', tostring(ready - now), '0', mark}
end
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - horizon)
local wait = tonumber(redis.call('HGET', state, 'pause') or '0') - now
local pause_left = math.max(wait, 0)
local free = {[0] = nil, [1] = nil}
local entries = nil
for i = 7, #ARGV, 3 do
  local limit, window, tok = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2] == '1'
  local start = now - window
  local used, unit_need = 0, 1
  if tok then
    unit_need = need
    if entries == nil then entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES') end
    for j = 1, #entries, 2 do
      if tonumber(entries[j + 1]) > start then
        used = used + tonumber(string.match(entries[j], ':(%d+)$'))
      end
    end
  else
    used = redis.call('ZCOUNT', log, '(' .. start, '+inf')
  end
  local key = tok and 1 or 0
  if free[key] == nil or limit - used < free[key] then free[key] = limit - used end
  local excess = used + unit_need - limit
  if excess > 0 then
    local until_ = nil
    if tok then
      for j = 1, #entries, 2 do
        local at = tonumber(entries[j + 1])
        if at > start then
          excess = excess - tonumber(string.match(entries[j], ':(%d+)$'))
          if excess <= 0 then until_ = at; break end
        end
      end
    else
      local e = redis.call('ZRANGEBYSCORE', log, '(' .. start, '+inf', 'WITHSCORES', 'LIMIT', excess - 1, 1)
      if #e > 0 then until_ = tonumber(e[2]) end
    end
    if until_ then wait = math.max(wait, until_ + window - now + slack)
    else wait = math.max(wait, window) end
  end
end
""" + CAPS + """
local fr, ft = math.max(free[0] or 0, 0), math.max(free[1] or 0, 0)
if wait > 0 then
  return {0, tostring(wait), tostring(fr), tostring(ft), tostring(pause_left), tostring(cap_left),
          mark}
end
redis.call('ZADD', log, now, ARGV[1] .. ':' .. need)
redis.call('PEXPIRE', log, math.ceil(horizon * 1000) + 1000)
if capped.r then redis.call('HINCRBY', state, 'cap_r', -1) end
if capped.t then redis.call('HINCRBY', state, 'cap_t', -need) end
-- headroom after this admission, like the in-memory backend's
return {1, '0', tostring(math.max(fr - 1, 0)), tostring(math.max(ft - need, 0)),
        tostring(pause_left), tostring(cap_left), mark}
"""

#: Lua: ``uncap(at, old, new)``, a log member admitted at ``at`` settled (``old`` to ``new``,
#: '' refunded): a provider cap in force that counted it (admitted from ``cf_`` on, other than
#: the request the reading answered, ``cb_``) gets back what it gave back (a request refunded,
#: tokens reconciled), as in memory (``window.Window.adjust``). Reads ``state`` and ``now``.
UNCAP = """
local function uncap(at, old, new)
  local id = string.match(old, '^[^:]+')
  for _, u in ipairs({'r', 't'}) do
    local c = redis.call('HMGET', state, 'until_' .. u, 'cf_' .. u, 'cb_' .. u)
    local from = tonumber(c[2] or '')
    if tonumber(c[1] or '0') > now and from and tonumber(at) >= from and c[3] ~= id then
      local back = new == '' and 1 or 0
      if u == 't' then
        back = tonumber(string.match(old, ':(%d+)$')) - tonumber(string.match(new, ':(%d+)$') or '0')
      end
      if back ~= 0 then redis.call('HINCRBY', state, 'cap_' .. u, back) end
    end
  end
end
"""

#: KEYS: log, state. ARGV: old member, new member. Keeps the admission time (and gives a
#: provider cap back what it counted of the change: ``UNCAP``); no-op once expired.
RECONCILE = _NOW + """
local state = KEYS[2]
""" + UNCAP + """
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not at then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], at, ARGV[2])
  -- removing the last member deleted the key and its TTL: give the recreated key its TTL back
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
uncap(at, ARGV[1], ARGV[2])
return 1
"""

#: KEYS: state. ARGV: seconds. Never shortens a pause already set by any process.
PAUSE = _NOW + """
local until_ = now + tonumber(ARGV[1])
if until_ > tonumber(redis.call('HGET', KEYS[1], 'pause') or '0') then
  redis.call('HSET', KEYS[1], 'pause', tostring(until_))
end
local ttl = math.ceil(tonumber(ARGV[1]) * 1000) + 1000
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""

#: KEYS: state. ARGV: unit ('r' or 't'), remaining, reset seconds. Counts ours admitted from
#: now on (``cf_``, ``UNCAP``).
CAP = _NOW + """
redis.call('HSET', KEYS[1], 'cap_' .. ARGV[1], ARGV[2], 'until_' .. ARGV[1], tostring(now + tonumber(ARGV[3])),
           'cf_' .. ARGV[1], tostring(now), 'cb_' .. ARGV[1], '')
local ttl = math.ceil(tonumber(ARGV[3]) * 1000) + 1000
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""

#: After FENCE (``_fence``): a server clock that stepped back shifts the lease expiries and
#: tombstones by the step, so a dead worker's permits do not stay taken that much longer.
_SHIFT_LEASES = """
if step > 0 then
  for _, key in ipairs({KEYS[1], KEYS[3]}) do
    local all = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    for j = 1, #all, 2 do redis.call('ZADD', key, tonumber(all[j + 1]) - step, all[j]) end
  end
end
"""

#: KEYS: leases (ZSET lease id scored by expiry), fence (the marker HASH, ``_fence``), gone
#: (ZSET of released ids scored by when the tombstone ends). ARGV: lease id, limit, lease
#: seconds, known marker, proposed marker. Returns {acquired, seconds until a retry may succeed
#: (a hint for polling), marker}. An id already released (its caller gave up before this late
#: run) is never granted; after a restart none is granted for a lease.
ACQUIRE = _NOW + """
local lease = tonumber(ARGV[3])
local fence, fence_for, known, proposed = KEYS[2], lease, ARGV[4], ARGV[5]
""" + FENCE + _SHIFT_LEASES + """
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return {0, tostring(lease), mark} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ready > now then return {0, tostring(ready - now), mark} end
local held = redis.call('ZCARD', KEYS[1])
if held < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
  return {1, '0', mark}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tostring(tonumber(first[2]) - now), mark}
"""

#: KEYS: leases, fence, gone. ARGV: lease seconds, known marker, proposed marker, then the ids
#: this process holds. Extends each; one Redis lost (restart, expiry while this process could
#: not reach it) is put back, the limit notwithstanding: its call is running. Released ids stay
#: released. Returns {how many came back, marker}.
RENEW = _NOW + """
local lease = tonumber(ARGV[1])
local fence, fence_for, known, proposed = KEYS[2], lease, ARGV[2], ARGV[3]
""" + FENCE + _SHIFT_LEASES + """
local back = 0
for i = 4, #ARGV do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i]) then
    back = back + redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
return {back, mark}
"""

#: KEYS: leases, gone. ARGV: lease seconds, tombstone ('1' or '0'), then lease ids to release.
#: A tombstone (for ids whose ACQUIRE or RENEW may still run late) keeps them released for a
#: lease. Returns 1.
RELEASE = _NOW + """
local lease = tonumber(ARGV[1])
for i = 3, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  if ARGV[2] == '1' then redis.call('ZADD', KEYS[2], now + lease, ARGV[i]) end
end
if ARGV[2] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('PEXPIRE', KEYS[2], math.ceil(lease * 1000) + 1000)
end
return 1
"""
