"""Lua scripts for the default ``RateLimit(refill="auto")`` in Redis: the learned shape shared.

Like :class:`llmguard._admission.ratelimit.auto.AutoTrack`, every quota keeps a sliding log (the
key's log ZSET) and a bucket (the state HASH's fields, as ``_bucket_scripts``), both fed by every
admission, settlement and refund from the start; a fixed window's count is read from the log, which
holds the current window. The shape one process learned is a small HASH next to them (``kind``,
``epoch`` in server time, ``lims`` the effective limit per quota, ``why``, ``v`` a version,
``late`` when the server counts a request late; ``_learned_scripts``), so switching shape mid-run
needs no reconstruction and never admits more than the server allows: the new pacer has seen every
admission. A ZSET ``done`` holds when each call ended (its settlement): a fixed window counted late
carries ours in flight at its boundary into it (``fixed.FixedCount``), from every process.
"""

from __future__ import annotations

from ._bucket_scripts import PRELUDE
from ._carry_scripts import TRIM
from ._fence import FENCE
from ._fixed_scripts import FIXED
from ._peek import PEEK
from ._scripts import CAPS, UNCAP
from ._probe_scripts import BOTH, CPROBE, EITHER, PROBE, SILENT

__all__ = ["LIMITS", "RESERVE", "SETTLE", "SHAPE_TTL"]

#: Seconds a learned shape lives after the last admission of its key.
SHAPE_TTL = 3600

#: Lua: the learned limits (``lims``: "l1,l2,..."; 0 for as configured) and ``limit_of``.
LIMITS = """
local learned, k = {}, 0
for x in string.gmatch(lims, '[^,]+') do k = k + 1; learned[k] = tonumber(x) end
local function limit_of(n, limit)
  local l = learned[n]
  if l and l > 0 and l < limit then return l end
  return limit
end
"""

#: Lua: ``settle(log, shape, done, made, old, new, reserved, used, first)``: settles a
#: reservation (``SETTLE``'s arguments, the quotas' from ARGV[first]), its call ended now
#: (``done``, once a reading without a reset was heard or an answer without any header, unless a
#: bucket or a sliding window was learned since); RESERVE runs it first for each settlement it
#: carries. ``hush(shape)``: a process read an answer without any rate-limit header (``_silent``).
SETTLING = UNCAP + """
local function hush(shape)
  if redis.call('HSETNX', shape, 'sq', '1') == 1 then
    redis.call('HSETNX', shape, 'noreset', '1')
    redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """)
  end
end
local function settle(log, shape, done, made, old, new, reserved_tokens, used_tokens, first)
  local made, marks = marks_of(made)  -- (an output quota's: ``_bucket_scripts.PRELUDE``)
  local at = redis.call('ZSCORE', log, old)
  local refused = false
  if not at then  -- a 429 marked it refused (``_refused_scripts.REFUSED``): settled marked
    local marked = (string.gsub(old, ':(%d+)$', ':r:%1'))
    at = redis.call('ZSCORE', log, marked)
    if at then
      refused, old = true, marked
      if new ~= '' then new = (string.gsub(new, ':(%d+)$', ':r:%1')) end
    end
  end
  if at and old ~= new then
    local pttl = redis.call('PTTL', log)
    redis.call('ZREM', log, old)
    if new ~= '' then
      redis.call('ZADD', log, at, new)
      if pttl > 0 then redis.call('PEXPIRE', log, pttl) end
    end
    uncap(at, old, new)
  end
  local learnt = redis.call('HMGET', shape, 'lims', 'kind', 'noreset')
  -- (a refused one is carried by no count made since its 429: the one before keeps it, safe)
  if at and old ~= new and not refused and learnt[2] == 'fixed' then  -- carried (``_fixed_scripts``):
    local was, is = tonumber(string.match(old, ':(%d+)$')), tonumber(string.match(new, ':(%d+)$') or '0')
    local n = 0  -- a refund (never sent) or a new token count changes the carried count too
    for i = first, #ARGV, 5 do
      n = n + 1
      local margin = tonumber(ARGV[i + 4])
      local b, sum, since = string.match(redis.call('HGET', state, 'carry' .. n) or '', '^([^,]+),([^,]+)(.*)$')
      b = tonumber(b or '')
      if b and tonumber(at) >= b - tonumber(ARGV[i + 1]) and tonumber(at) < b - margin then
        local delta = ARGV[i + 2] == '1' and is - was or (new == '' and -1 or 0)
        redis.call('HSET', state, 'carry' .. n, fmt(b) .. ',' .. (tonumber(sum) + delta) .. since)
      end
    end
  end
  if at and new ~= '' and learnt[3] and learnt[2] ~= 'bucket' and learnt[2] ~= 'sliding' then
    local span = 0  -- a clock window counted late (to be) learned may carry it: two spans
    for i = first, #ARGV, 5 do span = math.max(span, tonumber(ARGV[i + 1]) + tonumber(ARGV[i + 4])) end
    redis.call('ZADD', done, now, string.match(old, '^[^:]+'))
    redis.call('ZREMRANGEBYSCORE', done, '-inf', now - 2 * span)
    redis.call('PEXPIRE', done, math.ceil(2000 * span) + 1000)
  end
  if redis.call('HGET', state, 'b') ~= made then return 0 end
  local lims = learnt[1] or ''
""" + LIMITS + """
  reserved_tokens, used_tokens = tonumber(reserved_tokens), tonumber(used_tokens)
  local n = 0
  for i = first, #ARGV, 5 do
    n = n + 1
    local tok = ARGV[i + 2] == '1'
    local cap = limit_of(n, tonumber(ARGV[i]))
    local rate = cap / tonumber(ARGV[i + 1])
    local level, deficit, outstanding = load(n, cap, rate)
    local reserved, actual, since = 1, (used_tokens and 1 or nil), nil
    if tok then reserved, actual = reserved_tokens, used_tokens; since = since_of(n, marks, outstanding, reserved, actual) end
    settle_bucket(n, cap, rate, math.min(level, cap), deficit, outstanding, reserved, actual, since)
  end
  expire()
  return 1
end
"""

#: KEYS: state, log, fence, shape, done. ARGV: member prefix, tokens, horizon (longest window plus
#: margin, the log's span), slack, known marker, proposed marker, probe ('' none, 'vouched':
#: admit whatever the pacers say, 'room': if the quota has room as the server counts it), the
#: number of settlements carried, this process's token charge to share (``charge.Charge.shared``;
#: '' nothing new), what the other processes sent lately to return (``_peek``: '' nothing), the
#: shape assumed until one is learned ('bucket': ``shape.Shape.assumed``, unless a process found
#: it is not, ``unassumed``; '' a sliding log), '1' when this process read an answer without
#: any rate-limit header (``_silent``: before the settlements, so their ends are kept), the
#: request's bare token estimate ('' none: ``_charge``), the settlements' SETTLE arguments (5 each), then limit/window/is_tokens/learns/margin per quota (the settlements' quotas too). Returns {admitted (1; 2 as the probe;
#: 3, 4, 6 as a silent server's, ``_probe_scripts``; 5 as its charge's, ``_charge``; -1 not: another process probes this window), wait, requests available, tokens available,
#: pause left, cap left, the state hash's ``b`` ('' when not admitted), kind, epoch - now (''), lims,
#: why, version, late ('1' or ''), the shared charge (''), the others' admissions
#: (``_peek``), the give-back verdict ('1', '0', '': ``_giveback``) and why, doubt (''), what
#: each bucket's settled reservations were charged so far ('s1,s2': ``_bucket_scripts``), marker}.
RESERVE = PRELUDE + SETTLING + """
local log, shape, done = KEYS[2], KEYS[4], KEYS[5]
local Q = 14 + 5 * tonumber(ARGV[8])  -- the quotas' arguments follow the settlements'
if ARGV[12] == '1' then hush(shape) end
if ARGV[9] ~= '' then  -- what one process learned of the server's token charge, for all
  redis.call('HSET', shape, 'charge', ARGV[9])
  redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """)
end
local need, horizon, slack = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local fence, fence_for, known, proposed, probe = KEYS[3], horizon, ARGV[5], ARGV[6], ARGV[7]
local peek = ARGV[10]
""" + FENCE + """
local got = redis.call('HMGET', shape, 'kind', 'epoch', 'lims', 'why', 'v', 'late', 'charge', 'unassumed', 'gb', 'gbwhy', 'sq', 'ss', 'sp', 'cp', 'ck', 'cl', 'doubt', 'rf', 'rp')
local kind, epoch, lims, why = got[1] or 'unknown', tonumber(got[2] or ''), got[3] or '', got[4] or ''
-- input/output token quotas not learned yet: paced as the buckets Anthropic documents
local assumed = kind == 'unknown' and ARGV[11] == 'bucket' and not got[8]
-- a fixed window counted late keeps the window before the current one (ours in flight carried)
local late = kind == 'fixed' and epoch ~= nil and got[6] == '1'
local doubt = tonumber(got[17] or '')  -- how far after the boundary the server's may lie
""" + EITHER + """
local keep = late and 2 * horizon or horizon
if step > 0 then  -- the clock stepped back: shift every time kept by the step
  local all = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  for j = 1, #all, 2 do redis.call('ZADD', log, tonumber(all[j + 1]) - step, all[j]) end
  local fields, n = {'pause', 'until_r', 'until_t'}, 0
  for i = Q, #ARGV, 5 do n = n + 1; fields[#fields + 1] = 'a' .. n end
  for _, field in ipairs(fields) do
    local at = tonumber(redis.call('HGET', state, field) or '')
    if at then redis.call('HSET', state, field, fmt(at - step)) end
  end
  if epoch then epoch = epoch - step; redis.call('HSET', shape, 'epoch', fmt(epoch)) end
end
-- the settlements first (this process's, queued since its last round trip: ``_learning``)
for j = 14, Q - 1, 5 do settle(log, shape, done, ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4], Q) end
""" + PEEK + """
local function reply(admitted, wait, fr, ft, pause_left, cap_left, made)
  return {admitted, fmt(wait), fr, ft, fmt(pause_left), fmt(cap_left), made, kind,
          epoch and fmt(epoch - now) or '', lims, why, got[5] or '0', got[6] or '', got[7] or '',
          peeked(), got[9] or '', got[10] or '', got[17] or '', spent_of((#ARGV - Q + 1) / 5), mark}
end
if ready > now then return reply(0, ready - now + slack, '0', '0', ready - now, 0, '') end
""" + TRIM + """
""" + LIMITS + """
local wait = tonumber(redis.call('HGET', state, 'pause') or '0') - now
local pause_left = math.max(wait, 0)
local entries = nil
local function units(lo, hi, tok, open)  -- the log's units admitted in [lo, hi), (lo, hi)
  if not tok then
    return redis.call('ZCOUNT', log, (open and '(' or '') .. fmt(lo), '(' .. fmt(hi))
  end
  if entries == nil then entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES') end
  local sum = 0
  for j = 1, #entries, 2 do
    local at = tonumber(entries[j + 1])
    if (at > lo or (at == lo and not open)) and at < hi then
      sum = sum + tonumber(string.match(entries[j], ':(%d+)$'))
    end
  end
  return sum
end
local buckets, free, n, rblocked = {}, {}, 0, false
for i = Q, #ARGV, 5 do
  n = n + 1
  local waited = wait
  local window, tok = tonumber(ARGV[i + 1]), ARGV[i + 2] == '1'
  local learns, margin = ARGV[i + 3] == '1', tonumber(ARGV[i + 4])
  local limit = limit_of(n, tonumber(ARGV[i]))
  local rate = limit / window
  local level, deficit, outstanding = load(n, limit, rate)
  level = math.min(level, limit)
  local unit = tok and need or 1
  buckets[n] = {limit, rate, level, deficit, outstanding, unit}
  -- the sliding log: the unit leaving the window last before `unit` more fit
  local used = units(now - window, now + 1, tok, true)
  local avail = limit - used
  local excess, log_wait = used + unit - limit, 0
  if excess > 0 then
    if entries == nil then entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES') end
    log_wait = window
    for j = 1, #entries, 2 do
      local at = tonumber(entries[j + 1])
      if at > now - window then
        excess = excess - (tok and tonumber(string.match(entries[j], ':(%d+)$')) or 1)
        if excess <= 0 then log_wait = at + window - now + slack; break end
      end
    end
  end
  if (kind == 'bucket' or assumed) and learns then
    if level < unit then wait = math.max(wait, (unit - level) / rate + slack) end
    avail = level
  elseif (kind == 'fixed' or served) and learns and epoch then
""" + FIXED + BOTH + """
  else
    wait = math.max(wait, log_wait)
  end
  if learns then lq[#lq + 1] = {window - margin, margin, tok, unit, limit} end
  blocked = blocked or (not learns and log_wait > 0)
  rblocked = rblocked or (not tok and wait > math.max(waited, 0))
  local key = tok and 1 or 0
  if free[key] == nil or avail < free[key] then free[key] = avail end
end
""" + CAPS + """
""" + SILENT + CPROBE + """
local function avail(x) return fmt(math.max(math.floor((x or 0) + 1e-9), 0)) end
""" + PROBE + """
redis.call('ZADD', log, now, ARGV[1] .. ':' .. need)
redis.call('PEXPIRE', log, math.ceil(keep * 1000) + 1000)
if capped.r then redis.call('HINCRBY', state, 'cap_r', -1) end
if capped.t then redis.call('HINCRBY', state, 'cap_t', -need) end
redis.call('HINCRBY', state, 'n_r', 1)  -- units admitted so far (``_learned_scripts.READING``)
redis.call('HINCRBY', state, 'n_t', need)
for k, b in ipairs(buckets) do store(k, b[1], b[2], b[3] - b[6], b[4] + b[6], b[5] + b[6]) end
redis.call('HSETNX', state, 'b', fmt(now))
expire()
if got[1] or got[7] or got[9] or probing then redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """) end
return reply(probing and 2 or silent > 0 and silent or cprobe and 5 or 1, 0, avail((free[0] or 1) - 1), avail((free[1] or need) - need), pause_left,
             cap_left, redis.call('HGET', state, 'b'))
"""

#: KEYS: state, log, shape, done. ARGV: the number of settlements, '1' when the process read an
#: answer without any rate-limit header (as ``RESERVE``'s), then per settlement the state
#: hash's ``b`` at reservation, old log member, new member ('' for a refund), tokens reserved,
#: tokens used ('' for a refund), then the reservations' limit/window/is_tokens/learns/margin
#: per quota. Settles each log entry (its admission time kept) and each bucket
#: (``bucket.settle``, at the learned limits), in order.
SETTLE = PRELUDE + SETTLING + """
local Q = 3 + 5 * tonumber(ARGV[1])
if ARGV[2] == '1' then hush(KEYS[3]) end
for j = 3, Q - 1, 5 do settle(KEYS[2], KEYS[3], KEYS[4], ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4], Q) end
return 1
"""
