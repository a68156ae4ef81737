"""Lua for a token bucket refuted on the shared log (``refill="auto"`` in Redis; in memory,
:mod:`llmguard._admission.ratelimit.refuted`): a server that says nothing, served a first
probe after the clock minute (a fixed window or a token bucket, ``ss``), and then a 429 no
bucket that admitted the probes could give: a fixed window, for every process.

Each probe served, the charge's (``_charge.CHARGED``) or the shape's (``_silent.VERDICT``),
bounds from above the factor a bucket of the quota may charge (``rc``, the ceiling: every
process's requests up to it within the quota plus its refill since any one, each arriving
when admitted); each 429 on tokens from below (``rf``, the floor: the least factor at which a
bucket, full at most, must refuse it, every process's sent up to the margin after it counted
before it). Both are kept in the key's shape HASH, as the memory's ``Charge`` keeps them, so
that a 429 one process reads refutes what a probe another process sent showed. A floor above
the ceiling: no bucket gave both, a fixed window did; learned at the minute ``ss`` (a first
probe served), counted late, as a served probe beyond the bucket is (``_silent``). Not shared,
the floor and the ceiling were never set in Redis: a strict fixed window charging 1.11x our
estimates (``bench_distributed --silent-only``) stayed unknown and was paced within both at
the opening factor, a window late each minute (1.76x the ideal where memory ran 1.00x).
"""

from __future__ import annotations

__all__ = ["BOUNDS", "WHY"]

#: Why a refutation learned a fixed window (``statistics().shape``).
WHY = ("a 429 no token bucket that served the probes would give (no rate-limit header): a "
       "fixed window starting afresh at each minute")

#: Lua helpers (after ``EST`` and ``fmt``): ``refute_ceiling(shape, entries, at, last, rate,
#: limit)`` lowers ``rc`` by a probe served at ``at`` (``last``: the latest it arrived; and
#: ``rp``, ``Charge.paced``: every one of ours arriving a margin after it went);
#: ``refute_floor(shape, entries, member, at, last, rate, limit)`` raises ``rf`` by a 429 to
#: ``member`` (``last``: ours sent up to the margin after it may have arrived first);
#: ``refute(shape, state)``: a fixed window at ``ss`` when ``rf > rc`` (1: learned; the
#: pause a 429 set in ``state`` dropped, as a fixed window learned by a probe drops it).
#: ``fixed_factor(shape)``, once a fixed window is learned (``bounds.windowed``): the shared
#: factor comes down to what the charge's probes served bound in their clock minute (``cc``;
#: else in a window holding them, ``cw``), never under what a 429 showed (``cl``): kept at
#: what a bucket allowed, a strict fixed window learned at 1.137x was sent 18 of its 19.
#: ``served(shape, log, member, first)``: ``refute_ceiling`` by the probe ``member`` served,
#: each token quota's (ARGV from ``first``: limit/window/is_tokens/learns/margin; the limit as
#: configured, not as learned: larger, the ceiling only loosens) while the shape is unknown
#: and the charge learned from a server that says nothing. ``cheaper(shape, log, member,
#: epoch, first)``: ``apart.cheaper``: True when the probe ``member``, beyond a bucket as we
#: count ours and served, was beyond it only at a guessed factor (silent, kept by its probe's
#: 429 (``ck``, ``Charge.guessed``), or kept above what a 429 showed and no bucket refuted:
#: ``refute`` decides then): a bucket charging less could have admitted it, so it
#: proves no fixed window; the shared factor comes down to the most such a bucket (or a fixed
#: window from ``epoch``'s minute, or of the charge's probes' minutes, ``cc``) allows. ``entries``: the
#: log's ZRANGE WITHSCORES (oldest first), refused members (``:r:``) left out.
BOUNDS = """
local function refute_ceiling(shape, entries, at, last, rate, limit)
  local sum, bound, paced = 0, math.huge, math.huge
  for j = #entries - 1, 1, -2 do
    local m, s = entries[j], tonumber(entries[j + 1])
    if s <= at and not string.find(m, ':r:') then
      sum = sum + est(m)
      bound = math.min(bound, (limit + rate * (last - s)) / sum)
      paced = math.min(paced, (limit + rate * (at - s)) / sum)
    end
  end
  local was = redis.call('HMGET', shape, 'rc', 'rp')
  if bound < (tonumber(was[1] or '') or math.huge) then redis.call('HSET', shape, 'rc', fmt(bound)) end
  if paced < (tonumber(was[2] or '') or math.huge) then redis.call('HSET', shape, 'rp', fmt(paced)) end
end
local function refute_floor(shape, entries, member, at, last, rate, limit)
  local sum, bound = est(member), math.huge
  for j = #entries - 1, 1, -2 do
    local m, s = entries[j], tonumber(entries[j + 1])
    if m ~= member and s <= last and not string.find(m, ':r:') then
      sum = sum + est(m)
      bound = math.min(bound, (limit + rate * (at - s)) / sum)
    end
  end
  local was = tonumber(redis.call('HGET', shape, 'rf') or '') or 0
  if bound < math.huge and bound > was then redis.call('HSET', shape, 'rf', fmt(bound)) end
end
local function served(shape, log, member, first)
  local got = redis.call('HMGET', shape, 'kind', 'charge')
  local how = string.match(got[2] or '', ',(.*)$')
  local at = tonumber(redis.call('ZSCORE', log, member) or '')
  if (got[1] and got[1] ~= 'unknown') or (how ~= 'silent' and how ~= 'kept') or not at then return end
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  for i = first, #ARGV, 5 do
    if ARGV[i + 2] == '1' and ARGV[i + 3] == '1' then
      local limit, margin = tonumber(ARGV[i]), tonumber(ARGV[i + 4])
      refute_ceiling(shape, entries, at, at + margin, limit / (tonumber(ARGV[i + 1]) - margin), limit)
    end
  end
end
local function cheaper(shape, log, member, epoch, first)
  local got = redis.call('HMGET', shape, 'charge', 'cl', 'rf', 'rc', 'cc', 'ck')
  local factor, how = string.match(got[1] or '', '^([^,]+),(.*)$')
  factor = tonumber(factor)
  local least, rf, rc = tonumber(got[2] or '') or 1.0, tonumber(got[3] or '') or 0, tonumber(got[4] or '') or math.huge
  local clocked = tonumber(got[5] or '') or math.huge  -- (the charge's probes' minutes: ``Charge.clocked``)
  local at = tonumber(redis.call('ZSCORE', log, member) or '')
  if not (at and factor and factor > 1.0 and (how == 'silent' or got[6] or (how == 'kept' and factor > least and rf <= rc))) then return false end
  local entries, best = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES'), nil
  for i = first, #ARGV, 5 do
    if ARGV[i + 2] == '1' and ARGV[i + 3] == '1' then
      local limit, margin = tonumber(ARGV[i]), tonumber(ARGV[i + 4])
      local W = tonumber(ARGV[i + 1]) - margin
      local rate, last, start = limit / W, at + margin, epoch + math.floor((at - epoch) / W) * W - margin
      local sum, count, loose, tight, minute = 0, 0, math.huge, math.huge, 0
      for j = #entries - 1, 1, -2 do
        local m, s = entries[j], tonumber(entries[j + 1])
        if s <= at and not string.find(m, ':r:') then
          sum, count = sum + est(m), count + 1
          loose = math.min(loose, (limit + rate * (last - s)) / sum)
          tight = math.min(tight, (limit + rate * (last - s) - count) / sum)
          if s >= start then minute = sum end
        end
      end
      if loose < 1.0 then return false end  -- no bucket even at our bare estimates
      local f = math.max(tight, math.min(minute > 0 and limit / minute or 0, clocked))
      if not best or f < best then best = f end
    end
  end
  if not best then return false end
  if best < factor then
    local new = math.max(least, best)
    redis.call('HSET', shape, 'charge', string.format('%.4f', math.ceil(new * 10000 - 1e-6) / 10000) .. ',' .. how)
  end
  return true
end
local function fixed_factor(shape)
  local got = redis.call('HMGET', shape, 'charge', 'cl', 'cc', 'cw')
  local factor, how = string.match(got[1] or '', '^([^,]+),(.*)$')
  factor = tonumber(factor)
  local bound = tonumber(got[3] or '') or tonumber(got[4] or '')
  if factor and (how == 'silent' or how == 'kept') and bound and bound < factor then
    local new = math.max(1.0, tonumber(got[2] or '') or 1.0, bound)
    redis.call('HSET', shape, 'charge', string.format('%.4f', math.ceil(new * 10000 - 1e-6) / 10000) .. ',' .. how)
  end
end
local function refute(shape, state)
  local got = redis.call('HMGET', shape, 'kind', 'ss', 'rf', 'rc')
  local ss, rf, rc = tonumber(got[2] or ''), tonumber(got[3] or ''), tonumber(got[4] or '')
  if (got[1] and got[1] ~= 'unknown') or not (ss and rf and rc and rf > rc) then return 0 end
  redis.call('HINCRBY', shape, 'v', 1)
  redis.call('HSET', shape, 'kind', 'fixed', 'why', [[""" + WHY + """]], 'epoch', fmt(ss), 'late', '1')
  redis.call('HDEL', shape, 'ss')
  if state then redis.call('HDEL', state, 'pause', 'until_r', 'until_t') end
  fixed_factor(shape)
  return 1
end
"""
