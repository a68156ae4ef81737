"""Lua scripts for ``RateLimit(refill="continuous")`` in Redis: the arithmetic of
``llmguard._admission.ratelimit.bucket`` (the same formulas, refunds bounded the same way), applied
atomically on the server's clock, so every process sharing a key shares one bucket per quota.

State lives in the key's state HASH (next to the Retry-After ``pause``): per quota ``i`` (1-based,
in the layer's order) ``l<i>`` the level at ``a<i>`` (server time), ``d<i>`` the deficit bound
and ``o<i>`` the units reserved and not settled yet; ``b`` when the hash was made (a
reservation is settled only in the hash that made it). A missing hash is a full bucket; the hash
expires once every bucket would be full again and nothing is outstanding, plus an hour for
reservations still in flight. Floats are formatted with 17 significant digits (Lua's
``tostring`` keeps 14: 0.1 ms of a Unix time).
"""

from __future__ import annotations

from ._fence import FENCE

__all__ = ["DRAIN", "PRELUDE", "RESERVE", "SETTLE"]

#: Lua: ``now`` (server time), ``state`` (KEYS[1]), ``fmt``, and ``load``/``store``/``expire`` of
#: bucket ``n``'s fields (also the buckets ``_auto_scripts`` keeps beside the log).
PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = KEYS[1]
local function fmt(x) return string.format('%.17g', x) end
local ttl = 0
-- bucket n now: level (refilled at rate up to cap), deficit (clipped to cap - level), outstanding
local function load(n, cap, rate)
  local got = redis.call('HMGET', state, 'l' .. n, 'a' .. n, 'd' .. n, 'o' .. n)
  if not got[1] then return cap, 0, 0 end
  local level, deficit = tonumber(got[1]), tonumber(got[3])
  local at = tonumber(got[2])
  if now > at then level = math.min(cap, level + (now - at) * rate) end
  return level, math.min(deficit, cap - level), tonumber(got[4])
end
local function store(n, cap, rate, level, deficit, outstanding)
  redis.call('HSET', state, 'l' .. n, fmt(level), 'a' .. n, fmt(now), 'd' .. n, fmt(deficit),
             'o' .. n, fmt(outstanding))
  local full = (cap - level) / rate
  if outstanding > 0 then full = full + 3600 end
  ttl = math.max(ttl, full)
end
local function expire()
  local ms = math.ceil(ttl * 1000) + 1000
  if redis.call('PTTL', state) < ms then redis.call('PEXPIRE', state, ms) end
end
-- an output quota's give-back (``output.OutputBucket``): its reservation's ``made`` is ``b|``
-- and what each bucket's settled reservations were charged (``s<n>``) as it was admitted;
-- ``since_of``: bucket n's ``since`` for a settlement (what every process's charged it since,
-- at most: the others outstanding and those settled since), its charge recorded
local function marks_of(made)
  local at = string.find(made, '|', 1, true)
  if not at then return made, nil end
  local marks = {}
  for x in string.gmatch(string.sub(made, at + 1), '[^,]+') do marks[#marks + 1] = tonumber(x) end
  return string.sub(made, 1, at - 1), marks
end
local function since_of(n, marks, outstanding, reserved, actual)
  if not marks or not actual then return nil end
  local spent = tonumber(redis.call('HGET', state, 's' .. n) or '0')
  redis.call('HSET', state, 's' .. n, fmt(spent + actual))
  if marks[n] and actual < reserved then return outstanding - reserved + spent - marks[n] end
  return nil
end
local function spent_of(count)
  local out = {}
  for k = 1, count do out[k] = redis.call('HGET', state, 's' .. k) or '0' end
  return table.concat(out, ',')
end
-- bucket n settles a reservation of `reserved` (1 request, or its tokens) that used `actual`
-- (nil: refunded): ``bucket.settle``'s arithmetic (``since``: a give-back's, ``output``)
local function settle_bucket(n, cap, rate, level, deficit, outstanding, reserved, actual, since)
  local others = outstanding - reserved
  if actual ~= nil and actual >= reserved then
    level = level - (actual - reserved)
    deficit = deficit - reserved
  else
    local used = actual or 0
    local credit = math.max(0, math.min(reserved - used, deficit - others - used))
    if since and cap - since - level > credit then credit = math.min(reserved - used, cap - since - level) end
    level = math.min(cap, level + credit)
    deficit = deficit - (since and reserved or credit + used)
  end
  store(n, cap, rate, level, math.max(0, math.min(deficit, cap - level)), others)
end
"""

#: KEYS: state, fence (the marker HASH, ``_fence``). ARGV: tokens, slack, horizon (longest
#: window), known marker, proposed marker, then limit/window/is_tokens triples. Returns
#: {admitted, wait, requests available, tokens available, pause left, '0' (no caps: headers
#: drain the buckets), the hash's ``b`` (identifies the reservation's buckets for SETTLE; ''
#: when not admitted), what each bucket's settled ones were charged (``spent_of``; admitted
#: only), marker}.
RESERVE = PRELUDE + """
local need, slack = tonumber(ARGV[1]), tonumber(ARGV[2])
local fence, fence_for, known, proposed = KEYS[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
""" + FENCE + """
if step > 0 then  -- the clock stepped back: refill from the shifted times, not from the future
  local fields, k = {'pause'}, 0
  for i = 6, #ARGV, 3 do k = k + 1; fields[#fields + 1] = 'a' .. k end
  for _, field in ipairs(fields) do
    local at = tonumber(redis.call('HGET', state, field) or '')
    if at then redis.call('HSET', state, field, fmt(at - step)) end
  end
end
if ready > now then  -- a restart lost the buckets: nothing until a window has passed
  return {0, fmt(ready - now + slack), '0', '0', fmt(ready - now), '0', '', mark}
end
local wait = tonumber(redis.call('HGET', state, 'pause') or '0') - now
local pause_left = math.max(wait, 0)
local buckets, free = {}, {}
local n = 0
for i = 6, #ARGV, 3 do
  n = n + 1
  local cap, tok = tonumber(ARGV[i]), ARGV[i + 2] == '1'
  local rate = cap / tonumber(ARGV[i + 1])
  local level, deficit, outstanding = load(n, cap, rate)
  local unit = tok and need or 1
  buckets[n] = {cap, rate, level, deficit, outstanding, unit, tok}
  if level < unit then wait = math.max(wait, (unit - level) / rate) end
  local key = tok and 1 or 0
  if free[key] == nil or level < free[key] then free[key] = level end
end
local admitted = wait <= 0
if admitted then
  free = {}
  for k, b in ipairs(buckets) do
    local level = b[3] - b[6]
    store(k, b[1], b[2], level, b[4] + b[6], b[5] + b[6])
    local key = b[7] and 1 or 0
    if free[key] == nil or level < free[key] then free[key] = level end
  end
  redis.call('HSETNX', state, 'b', fmt(now))
  expire()
end
local function avail(x) return fmt(math.max(math.floor((x or 0) + 1e-9), 0)) end
if not admitted then
  return {0, fmt(wait + slack), avail(free[0]), avail(free[1]), fmt(pause_left), '0', '', mark}
end
return {1, '0', avail(free[0]), avail(free[1]), fmt(pause_left), '0', redis.call('HGET', state, 'b'),
        spent_of(n), mark}
"""

#: KEYS: state. ARGV: the hash's ``b`` at reservation (an output quota's: and its marks,
#: ``marks_of``), tokens reserved, tokens used ('' for a refund), then limit/window/is_tokens
#: triples. ``bucket.settle`` for each bucket; nothing when the hash was made anew since (the
#: buckets that held the reservation are gone).
SETTLE = PRELUDE + """
local made, marks = marks_of(ARGV[1])
if redis.call('HGET', state, 'b') ~= made then return 0 end
local reserved_tokens = tonumber(ARGV[2])
local used_tokens = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV, 3 do
  n = n + 1
  local cap, tok = tonumber(ARGV[i]), ARGV[i + 2] == '1'
  local rate = cap / tonumber(ARGV[i + 1])
  local level, deficit, outstanding = load(n, cap, rate)
  local reserved, actual, since = 1, (used_tokens and 1 or nil), nil
  if tok then reserved, actual = reserved_tokens, used_tokens; since = since_of(n, marks, outstanding, reserved, actual) end
  settle_bucket(n, cap, rate, level, deficit, outstanding, reserved, actual, since)
end
expire()
return 1
"""

#: KEYS: state. ARGV: is_tokens of the header ('1' or '0'), remaining, then limit/window/
#: is_tokens triples. The provider's bucket holds ``remaining``: ours of that unit holds no more.
DRAIN = PRELUDE + """
local remaining = tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV, 3 do
  n = n + 1
  local cap = tonumber(ARGV[i])
  local rate = cap / tonumber(ARGV[i + 1])
  if ARGV[i + 2] == ARGV[1] then
    local level, deficit, outstanding = load(n, cap, rate)
    if level > remaining then store(n, cap, rate, remaining, deficit, outstanding) end
  end
end
if ttl > 0 then expire() end
return 1
"""
