"""Lua for what a probe's answer or a 429 shows of what a server that says nothing charges
against a token quota, on the shared log (``CHARGED``; the rest of the charge's learning, and
how it is shared, in ``_charge``):

* **Served** (``CHARGED``). The server counted every process's requests up to it at most at
  the quota: the factor comes down to the most that the shape learned allows (a sliding
  window: ours in the window; a token bucket: ours since any one, less its refill between
  their sends, each on the way as long as the probe, as a bucket is paced (``probing._probed``:
  with a margin's refill more, 1.143x kept a strict fixed window at 18 a window where it
  admits 19); a fixed clock window: ours since its start), the largest of the three while
  the shape is unknown, each count rounded up (one token less each, as in memory), never
  under what a 429 showed (``cl``). The least bounds of a window (``cw``, ``Charge.windowed``)
  and of a clock minute (``cc``, ``Charge.clocked``) are kept for what a 429 or a fixed
  window learned later allows (``_refuted_scripts.fixed_factor``).
* **Refused** (a 429 to any request of a token quota the requests quota does not explain):
  the server charged every process's requests that may have been counted before it more than
  the quota less it, so at least ``limit`` over their estimates (``cl``; the factor is raised
  to it). The first, when a bucket charging the factor would have admitted it (no refill
  explains it), also caps the factor at what a window admitted (``cw``, the probes served;
  and every process's sent a margin or more before it), as ``Charge.refused`` does (kept at
  1.15x, a strict fixed window admitting 19 a window was sent 18). The probe's ends the
  probing (``ck``: kept, as in memory), and leaves the shape's probing as it was (a 429 of
  another request ends that: ``_silent``). Each also bounds a bucket's factor (from below,
  a probe served from above: ``_refuted_scripts``).
* **The shape's first probe refused** (``shape``: a sliding window, ``_silent``), as any 429,
  its floor read as the shape is learned (the publication of the sliding window may come
  first); when no bucket that served the probes would refuse it (``rf`` above ``rc``), a
  factor a 429 kept as a bucket's comes down to what the window served (``cw``, never under
  ``cl``; ``learn_refusal``, ``bounds.windowed``): kept at 1.137x, where the server charges
  1.111x (``bench_distributed --silent-only``), a strict sliding window was sent 18 of its 19
  a window, 1.51x the ideal where memory ran 1.01x.
"""

from __future__ import annotations

from ..._admission.ratelimit.charge import MOST, OPENING
from ..._admission.ratelimit.fixed import CLOCK_SKEW
from ._auto_scripts import SHAPE_TTL
from ._carry_scripts import ANCHORED
from ._probe_scripts import EST
from ._refuted_scripts import BOUNDS

__all__ = ["CHARGED"]

#: KEYS: shape, log, state. ARGV: outcome ('served', 'refused', 'shape': the refused one
#: the shape's first probe, 'gone': never sent), the
#: request's log member, then limit/window/is_tokens/learns/margin per quota. Applies what it
#: showed to the shared factor (module docstring) and to a bucket's floor and ceiling
#: (``_refuted_scripts``); returns 1 when the factor (or the shape) changed.
CHARGED = EST + """
local shape, log, outcome, member = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local shaped = outcome == 'shape'  -- the first shape probe's 429: a sliding window (``_silent``)
if shaped then outcome = 'refused' end
local function fmt(x) return string.format('%.17g', x) end
""" + BOUNDS + """
local got = redis.call('HMGET', shape, 'cp', 'charge', 'cl', 'lims', 'kind', 'epoch', 'cw', 'cc')
local carried = redis.call('HMGET', shape, 'c0', 'cn', 'cs')
local kind, epoch = got[5] or 'unknown', tonumber(got[6] or '')
local prefix = string.match(member, '^(.*):%d+$')
local probe = got[1] and string.match(got[1], '^[^,]+,(.+)$') == prefix
if probe then redis.call('HDEL', shape, 'cp') end
local factor = tonumber(string.match(got[2] or '', '^([^,]+)')) or """ + repr(OPENING) + """
local how = string.match(got[2] or '', ',(.*)$') or 'silent'
if outcome == 'gone' or (how ~= 'silent' and how ~= 'kept') then return 0 end
local at = tonumber(redis.call('ZSCORE', log, member) or '')
if not at then at = tonumber(redis.call('ZSCORE', log, (string.gsub(member, ':(%d+)$', ':r:%1'))) or '') end
if not at then return 0 end
local least, lims = tonumber(got[3] or '') or 1.0, got[4] or ''
local learned, k = {}, 0
for x in string.gmatch(lims, '[^,]+') do k = k + 1; learned[k] = tonumber(x) end
local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
local n, bound, floor, rratio, tratio = 0, nil, nil, 0, 0
local windowed, fit, unrefilled, full, floors = tonumber(got[7] or '') or math.huge, math.huge, kind ~= 'bucket', false, {}
local clocks = tonumber(got[8] or '') or math.huge
for i = 3, #ARGV, 5 do
  n = n + 1
  local limit, window, margin = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 4])
  if learned[n] and learned[n] > 0 and learned[n] < limit then limit = learned[n] end
  local W, lo = window - margin, at - window  -- what may count with it: a learned fixed
  if kind == 'fixed' and epoch then lo = epoch + math.floor((at - epoch) / W) * W - margin end
  if ARGV[i + 2] ~= '1' and outcome == 'refused' then  -- a window of requests may have refused it
    local count = 1  -- window's from its start, else a sliding one's
    for j = 1, #entries, 2 do
      local s = tonumber(entries[j + 1])
      if entries[j] ~= member and not string.find(entries[j], ':r:') and s > lo and s <= at then count = count + 1 end
    end
    if count > limit then return 0 end
    full = full or count >= limit  -- (a window of requests may have refused it: no bucket's floor)
    rratio = math.max(rratio, count / limit)
  elseif ARGV[i + 2] == '1' and outcome == 'refused' then
    -- every process's that may have been counted before it, in a sliding window whatever the
    -- shape (a fixed one's count from its start, the shape wrongly learned from a bucket's
    -- served probe, took the floor to 1.8-3x)
    local sum, charged = est(member), tonumber(string.match(member, ':(%d+)$'))
    for j = 1, #entries, 2 do
      local s = tonumber(entries[j + 1])
      if entries[j] ~= member and not string.find(entries[j], ':r:') and s > at - window and s <= at + margin then
        sum, charged = sum + est(entries[j]), charged + tonumber(string.match(entries[j], ':(%d+)$'))
      end
    end
    tratio = math.max(tratio, charged / limit)
    local f = limit / sum
    if floor == nil or f > floor then floor = f end
    local rate, last = limit / W, at + margin
    if kind == 'unknown' or shaped then floors[#floors + 1] = {at, last, rate, limit} end
    local most, count, sure, n_sure = limit, 0, 0, 0  -- ``bounds.unrefilled``, and what fits
    for j = #entries - 1, 1, -2 do  -- ours sent a margin or more before it (``Charge.refused``)
      local m, s = entries[j], tonumber(entries[j + 1])
      if m ~= member and s <= last and not string.find(m, ':r:') then
        count = count + tonumber(string.match(m, ':(%d+)$'))
        most = math.min(most, limit + rate * (last - s) - count)
        if s > at - window and s < at - margin then sure, n_sure = sure + est(m), n_sure + 1 end
      end
    end
    if kind ~= 'fixed' and most < tonumber(string.match(member, ':(%d+)$')) then unrefilled = false end
    fit = math.min(fit, (limit - n_sure) / math.max(1, sure))
  elseif ARGV[i + 2] == '1' then  -- served: every process's up to it counted, at most the quota
    -- ours sent past the clock minute by more than the clocks' skew (``fixed.skew``)
    local early = math.min(margin, """ + repr(CLOCK_SKEW) + """ * W / 60)
    local rate, last, start = limit / W, at + margin, at - at % W + early
    if epoch then start = epoch + math.floor((at - epoch) / W) * W + early end
    local sliding, bucket, count, sum, csum, sn, cn = 0, math.huge, 0, 0, 0, 0, 0
    for j = #entries - 1, 1, -2 do
      local m, s = entries[j], tonumber(entries[j + 1])
      if s <= at and not string.find(m, ':r:') then
        count, sum = count + 1, sum + est(m)
        if s > at - window then sliding, sn = sum, count end
        if s >= start then csum, cn = sum, count end
        bucket = math.min(bucket, (limit + rate * (at - s) - count) / sum)  -- (as paced)
      end
    end
""" + ANCHORED + """    sliding = sliding > 0 and (limit - sn) / sliding or math.huge
    windowed = math.min(windowed, math.max(1.0, sliding))  -- (``Charge.windowed``)
    if kind == 'unknown' then refute_ceiling(shape, entries, at, last, rate, limit) end
    local clocked = csum > 0 and (limit - cn) / csum or math.huge
    clocks = math.min(clocks, clocked)  -- (``Charge.clocked``)
    local most = ({sliding = sliding, bucket = bucket, fixed = clocked})[kind]
        or math.max(sliding, bucket, clocked)  -- (the shape unknown: any of the three)
    if bound == nil or most < bound then bound = most end
  end
end
-- a 429 to a request whose requests quota was the fullest, as we count ours (``refusal``:
-- the 6th of 6 requests of a server admitting 5), is that quota's, not the charge's (taken
-- for the charge's, a token quota that never bound was charged 3x from then on)
if floor and not probe and rratio >= tratio then floor = nil end
if not full then
  for _, f in ipairs(floors) do refute_floor(shape, entries, member, f[1], f[2], f[3], f[4]) end
end
if windowed < math.huge then redis.call('HSET', shape, 'cw', fmt(windowed)) end
if clocks < math.huge then redis.call('HSET', shape, 'cc', fmt(clocks)) end
local new = factor
if floor then
  least = math.max(least, math.min(""" + repr(MOST) + """, floor))
  redis.call('HSET', shape, 'cl', fmt(least))
  new = math.max(factor, least)
  -- the first 429: a bucket charging the factor would have admitted it, so a window counted
  -- ours, and what it admitted bounds the factor from above (``Charge.refused``)
  if how ~= 'kept' and unrefilled then
    new = math.min(""" + repr(MOST) + """, math.max(1.0, least, math.min(factor, windowed, fit)))
  end
  if probe then redis.call('HSET', shape, 'ck', '1') end
elseif bound and bound < factor then
  new = math.max(1.0, least, bound)
end
-- a factor a 429 kept as a bucket's, the shape's probe refused where no bucket that served
-- the probes would refuse it: a sliding window, whose count of ours the probes served bound
if shaped and how == 'kept' and windowed < new then
  local b = redis.call('HMGET', shape, 'rf', 'rc')
  if (tonumber(b[1] or '') or 0) > (tonumber(b[2] or '') or math.huge) then
    new = math.max(1.0, least, windowed)
  end
end
local label, changed = (floor or least > 1.0) and 'kept' or 'silent', 0
if math.abs(new - factor) >= 1e-9 or not got[2] or label ~= how then  -- (a 429 keeps it)
  redis.call('HSET', shape, 'charge', string.format('%.4f', math.ceil(new * 10000 - 1e-6) / 10000) .. ',' .. label)
  changed = 1
end
if refute(shape, KEYS[3]) == 1 then changed = 1 end  -- (the factor a fixed window's count bounds)
if probe or floor or changed == 1 then redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """) end
return changed
"""
