"""Lua scripts for ``RateLimit(refill="continuous")`` in Redis: the arithmetic of
``llmguard._admission.bucket`` (same formulas, same refund bound), applied atomically on the
server's clock so every process sharing a key shares one bucket per quota.

State lives in the key's state HASH (next to the Retry-After ``pause``): per quota ``i`` (1-based,
in the layer's order) ``l<i>`` the level at ``a<i>`` (server time) and ``c<i>`` the units given
back by refunds so far; ``b`` when the hash was made. A missing hash is a full bucket; the hash
expires once every bucket would be full again, so an idle key costs nothing. Floats are
formatted with 17 significant digits (Lua's ``tostring`` keeps 14, i.e. 0.1 ms of a Unix time).
"""

from __future__ import annotations

__all__ = ["ADJUST", "DRAIN", "RESERVE"]

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = KEYS[1]
local function fmt(x) return string.format('%.17g', x) end
local ttl = 0
-- the level of bucket n now (refilled at rate up to cap) and its credited total
local function load(n, cap, rate)
  local got = redis.call('HMGET', state, 'l' .. n, 'a' .. n, 'c' .. n)
  local level = cap
  if got[1] then
    level = tonumber(got[1])
    local at = tonumber(got[2])
    if now > at then level = math.min(cap, level + (now - at) * rate) end
  end
  return level, tonumber(got[3] or '0')
end
local function store(n, cap, rate, level, credited)
  redis.call('HSET', state, 'l' .. n, fmt(level), 'a' .. n, fmt(now), 'c' .. n, fmt(credited))
  redis.call('HSETNX', state, 'b', fmt(now))
  ttl = math.max(ttl, (cap - level) / rate)
end
local function expire()
  local ms = math.ceil(ttl * 1000) + 1000
  if redis.call('PTTL', state) < ms then redis.call('PEXPIRE', state, ms) end
end
"""

#: KEYS: state. ARGV: tokens, slack, then limit/window/is_tokens triples. Returns {admitted,
#: wait, requests available, tokens available, pause left, '0' (no caps: headers drain the
#: buckets), made (``b``), then per bucket its level after the admission and credited total}.
RESERVE = _PRELUDE + """
local need, slack = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = tonumber(redis.call('HGET', state, 'pause') or '0') - now
local pause_left = math.max(wait, 0)
local levels, credits, free = {}, {}, {}
local n = 0
for i = 3, #ARGV, 3 do
  n = n + 1
  local cap, tok = tonumber(ARGV[i]), ARGV[i + 2] == '1'
  local rate = cap / tonumber(ARGV[i + 1])
  local level, credited = load(n, cap, rate)
  levels[n], credits[n] = level, credited
  local unit = tok and need or 1
  if level < unit then wait = math.max(wait, (unit - level) / rate) end
  local key = tok and 1 or 0
  if free[key] == nil or level < free[key] then free[key] = level end
end
if wait > 0 then
  return {0, fmt(wait + slack), fmt(math.max(math.floor((free[0] or 0) + 1e-9), 0)),
          fmt(math.max(math.floor((free[1] or 0) + 1e-9), 0)), fmt(pause_left), '0'}
end
local marks = {}
n = 0
free = {}
for i = 3, #ARGV, 3 do
  n = n + 1
  local cap, tok = tonumber(ARGV[i]), ARGV[i + 2] == '1'
  local rate = cap / tonumber(ARGV[i + 1])
  local level = levels[n] - (tok and need or 1)
  store(n, cap, rate, level, credits[n])
  marks[#marks + 1] = fmt(level)
  marks[#marks + 1] = fmt(credits[n])
  local key = tok and 1 or 0
  if free[key] == nil or level < free[key] then free[key] = level end
end
expire()
local out = {1, '0', fmt(math.max(math.floor((free[0] or 0) + 1e-9), 0)),
             fmt(math.max(math.floor((free[1] or 0) + 1e-9), 0)), fmt(pause_left), '0',
             redis.call('HGET', state, 'b')}
for _, m in ipairs(marks) do out[#out + 1] = m end
return out
"""

#: KEYS: state. ARGV: made (``b`` at reservation), admitted at, token delta, request delta (0,
#: or -1 for a refund), then limit/window/is_tokens/level after/credited quintuples. A growth is
#: charged; a shrink gives back what ``creditable`` allows, nothing if the hash was made anew.
ADJUST = _PRELUDE + """
local same = redis.call('HGET', state, 'b') == ARGV[1]
local t0, dtok, dlive = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = 0
for i = 5, #ARGV, 5 do
  n = n + 1
  local cap, tok = tonumber(ARGV[i]), ARGV[i + 2] == '1'
  local rate = cap / tonumber(ARGV[i + 1])
  local after, credited0 = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local delta = tok and dtok or dlive
  if delta > 0 then
    local level, credited = load(n, cap, rate)
    store(n, cap, rate, level - delta, credited)
  elseif delta < 0 and same then
    local level, credited = load(n, cap, rate)
    local credit = math.min(-delta, math.max(0, cap - after - rate * (now - t0)
                                                - (credited - credited0)))
    if credit > 0 then store(n, cap, rate, math.min(cap, level + credit), credited + credit) end
  end
end
if ttl > 0 then expire() end
return 1
"""

#: KEYS: state. ARGV: is_tokens of the header ('1' or '0'), remaining, then limit/window/
#: is_tokens triples. The provider's bucket holds ``remaining``: ours of that unit holds no more.
DRAIN = _PRELUDE + """
local remaining = tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV, 3 do
  n = n + 1
  local cap = tonumber(ARGV[i])
  local rate = cap / tonumber(ARGV[i + 1])
  if ARGV[i + 2] == ARGV[1] then
    local level, credited = load(n, cap, rate)
    if level > remaining then store(n, cap, rate, remaining, credited) end
  end
end
if ttl > 0 then expire() end
return 1
"""
