"""Lua for the probes of ``_auto_scripts.RESERVE``: requests sent beyond what the pacers admit,
to learn the server's shape, one at a time for every process sharing a key. ``PROBE`` is a
supposed fixed window's boundary's (``beyond.probe``); the rest probe a server that says
nothing (no rate-limit header, no 429 while we keep to the quota).

In memory each process probes as :mod:`llmguard._admission.ratelimit.silent` describes; over
Redis the probes are decided on the shared log, which holds every process's admissions, so the
server sees at most one probe at a time for the key, whichever process sends it, and the
verdict is every process's (``_silent``). The shape HASH keeps ``sq`` ('1' once a process read
an answer without any rate-limit header, '0' once any reading or a 429 not to a probe was
heard: no probe from then on), ``sp`` the probe in flight (``stage,sent,boundary,member``,
expiring after two spans) and ``ss`` the clock minute (server time) a first probe was served
at. Server time is the wall clock, so its minutes are the clock's.

1. Just after a clock minute, when a sliding window counting every process's admissions must
   refuse one more while a fixed window from the minute has room (counting from the margin
   before it, or from the clocks' skew before it once what the server served shows it did:
   ``_straddle_scripts``), the head of one line goes (``3``). Refused: a sliding window (the
   one 429), published for all. Served: ``ss`` (and ``sd<n>``, the straddle, for the count).
2. With ``ss``, every process paces within both a fixed window from that minute (counted
   late, ``_fixed_scripts``) and what a token bucket surely holds (its level less what it
   refills while a request is on the way); once the bucket is dry while the minute has room,
   one more goes (``4``): served, a fixed window (published), unless it was beyond the bucket
   only at a guessed factor and no 429 refuted a bucket (``_refuted_scripts.cheaper``: the
   factor comes down); refused, a bucket (paced as a sliding window, as in memory). Once the minute is spent surely (at every process's bare
   estimates) while the bucket, as we count ours, holds one more (a batch sent on a
   minute: both spent there, the bucket refilling), that one goes (``6``, ``apart.spent``):
   served, a bucket; refused, a fixed window (published; paced within both, nothing went
   until the next minute).
"""

from __future__ import annotations

from ..._admission.ratelimit.fixed import CLOCK_SKEW
from ._straddle_scripts import STRADDLED

__all__ = ["BOTH", "CPROBE", "EITHER", "EST", "POLL", "PROBE", "SILENT"]

#: Seconds a waiter waits at most while a supposed fixed window's boundary (or a server that
#: says nothing) is being probed, by any process, before reserving again: what was learned
#: meanwhile paces it then.
POLL = 0.5

#: Lua helpers: ``est(m)``, a log member's bare estimate (its reserved tokens when it carries
#: none: a larger count, so every bound below errs safe).
EST = """
local function est(m)
  return tonumber(string.match(m, '~(%d+):') or string.match(m, ':(%d+)$'))
end
"""

#: Lua, after ``late`` is set: ``quiet`` (probes may go), ``served`` (the minute of a served
#: first probe: paced within both, its fixed count counted late) and what the loop collects.
EITHER = EST + """
local quiet = kind == 'unknown' and got[11] == '1' and not assumed
local served = quiet and tonumber(got[12] or '') or nil
if served then epoch, late = served, true end
local lq, dry, roomy, blocked, spent, held = {}, false, true, false, false, 0
-- ours counted at a guessed charge (nothing heard of tokens, ``_charge``): a token bucket dry
-- as we count ours may hold one more at what the server charges; served, that probe lowers
-- the factor unless a 429 refuted every bucket (``_refuted_scripts.cheaper``); none goes once
-- a 429 and the probes bracket what a bucket charges under the factor (``silent.bracketed``)
local told = string.match(got[7] or '', ',(.*)$')
local guessed = tonumber(ARGV[13]) ~= nil and told ~= 'heard' and told ~= 'trusted'
local bracketed = guessed and (tonumber(got[18] or '') or 0) > 0 and (tonumber(got[19] or '')
    or math.huge) < (tonumber(string.match(got[7] or '', '^([^,]+)')) or math.huge)
"""

#: Lua, in the loop's fixed-window branch after ``FIXED`` (its ``at``: when the minute has
#: room): also within what a token bucket surely holds (``held``: seconds until it holds this
#: one; every process's counted at most at the factor the probes served allow, ``rp``, as
#: ``holds.surely`` counts ours: counted as reserved, at a factor a probe since brought down,
#: each minute's burst came a refill late, 1.52x where memory ran 1.46x), whether it is dry,
#: and whether the minute is ``spent`` surely (``apart.spent``: every process's served since
#: its start and its skew, refused left out, and this one, at their bare estimates, the least
#: a server charges, over the limit).
BOTH = """
    if served then
      local ceiling = tok and tonumber(got[19] or '')
      if ceiling then  -- ours counted at most at it (``carry.charged``), each arrived as sent
        if entries == nil then entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES') end
        local count, most = 0, limit
        for j = #entries - 1, 1, -2 do
          local m = entries[j]
          if not string.find(m, ':r:') then
            count = count + math.min(tonumber(string.match(m, ':(%d+)$')), math.ceil(est(m) * ceiling - 1e-9))
            most = math.min(most, limit + rate * (now - tonumber(entries[j + 1])) - count)
          end
        end
        level = math.max(level, most)
      end
      local short = unit + rate * margin - level
      if short > 0 then
        wait = math.max(wait, short / rate + slack)
        held = math.max(held, short / rate)
      end
      avail = math.min(avail, level - rate * margin)
      dry = dry or level + rate * margin < unit
      roomy = roomy and at <= now
      local sum = tok and (tonumber(ARGV[13]) or need) or 1
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, fmt(epoch + current * W + early), '+inf')) do
        if not string.find(m, ':r:') then sum = sum + (tok and est(m) or 1) end
      end
      spent = spent or sum > limit
    end
"""

#: Lua, after the caps: ``silent`` (0, or 3 / 4 / 6: the stage of the probe admitted now) and
#: the minute it probes (``sb``); none beyond the bucket or the minute while the charge's probe
#: is in flight (``silent.due``: its answer may bracket the factor, and then none goes; sent
#: beside it, the bucket as we count ours went a unit deeper, each minute's burst a refill
#: late); a wait cut to when a probe may go, the first one's even while a pause runs (to when
#: both have passed, as ``silent.due``: left to the sliding log, a process whose callers asked
#: 0.04 s before a 429's pause ended slept to the log's end, 9 s into the minute the probe
#: opened). Strict fixed window, ``bench_distributed``: 1.52x where memory ran 1.46x.
SILENT = STRADDLED + """
local silent, sb = 0, nil
local claim = got[13] and tonumber(string.match(got[13], '^%d,([^,]+)')) or nil
if quiet and wait > 0 and cap_left <= 0 and not blocked and #lq > 0
    and not (claim and now - claim < 2 * horizon) and (pause_left <= 0 or not served) then
  local bare, how = tonumber(ARGV[13]), string.match(got[7] or '', ',(.*)$')
  local least = bare and not got[15] and how ~= 'heard' and (tonumber(got[16] or '') or 1.0) or nil
  if served then  -- (dry as we count ours: a bucket charging less served it, ``least``)
    local cp = tonumber(string.match(got[14] or '', '^([^,]+)'))
    if cp and now - cp < 2 * horizon then  -- the charge's probe in flight: its answer first
    elseif dry and roomy and not least and not bracketed then
      silent, sb = 4, served
    elseif spent then
      if held <= 0 then silent, sb = 6, served else wait = math.min(wait, held + slack) end
    end
  else
    -- every process's units after lo, refused left out (``least``: tokens at the least the
    -- server charges, a silent charge's floor over the bare estimates, until a probe of the
    -- charge was refused (``ck``): served beyond a sliding window full only as we count ours
    -- at the opening factor, a strict server's probe showed no sliding window: 5-9 429s)
    local function counted(lo, open, tok, least)
      local sum = 0
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, (open and '(' or '') .. fmt(lo), '+inf')) do
        if not string.find(m, ':r:') then
          sum = sum + (not tok and 1 or least and est(m) * least or tonumber(string.match(m, ':(%d+)$')))
        end
      end
      return sum
    end
    -- a fixed window from b has room: every process's from the margin before it on leave
    -- room, or from when what it served shows it counted them from (``silent.fresh``)
    local function fresh(q, b)
      if counted(b - q[2], false, q[3]) + q[4] <= q[5] then return true end
      local since = straddled(log, done, b, q[1], q[2], q[3], q[5], now, how == 'trusted')
      return since ~= nil and counted(since, false, q[3]) + q[4] <= q[5]
    end
    local W = lq[1][1]
    for pass = 0, 1 do
      local b = now - now % W + pass * W
      local full, fits, at = false, true, now
      for _, q in ipairs(lq) do  -- q: W, margin, tok, unit, limit
        at = math.max(at, b + math.min(q[2], """ + repr(CLOCK_SKEW) + """ * W / 60))
        full = full or counted(at - W + q[2], true, q[3], least)
                       + ((q[3] and least) and bare * least or q[4]) > q[5]
        fits = fits and fresh(q, b)
      end
      if full and fits then
        local go = math.max(at - now, pause_left)  -- (not before a pause ends: ``silent.due``)
        if go <= 0 then silent, sb = 3, b else wait = math.min(wait, go + slack) end
        break
      end
    end
  end
end
if quiet and claim and now - claim < 2 * horizon then wait = math.min(wait, """ + repr(POLL) + """) end
if silent > 0 then redis.call('HSET', shape, 'sp', silent .. ',' .. fmt(now) .. ',' .. fmt(sb) .. ',' .. ARGV[1]) end
"""

#: Lua, after ``SILENT``: a supposed boundary (a clock minute, or one a reset pointed to) is
#: probed by one request a window, whichever process sends it first (``probe``: 'vouched'
#: admits it whatever the pacers say; 'room' if the quota as configured has room as the server
#: counts it, what it refused left out, as ``beyond.probe``: else the wait is cut to when it
#: has, not polled); returns unless something is admitted now.
PROBE = """
local probed = tonumber(redis.call('HGET', shape, 'probed') or '')
local taken = probed ~= nil and now - probed < horizon
local function room()  -- seconds until that room (0: now); oldest first, they leave in order
  if entries == nil then entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES') end
  local until_ = 0
  for i = Q, #ARGV, 5 do
    local tok, window, used, inside = ARGV[i + 2] == '1', tonumber(ARGV[i + 1]), 0, {}
    for j = 1, #entries, 2 do
      local at = tonumber(entries[j + 1])
      if at > now - window and not string.find(entries[j], ':r:') then
        inside[#inside + 1] = {at, tok and tonumber(string.match(entries[j], ':(%d+)$')) or 1}
        used = used + inside[#inside][2]
      end
    end
    local excess = used + (tok and need or 1) - tonumber(ARGV[i])
    for _, e in ipairs(excess > 0 and inside or {}) do
      excess = excess - e[2]
      if excess <= 0 then until_ = math.max(until_, e[1] + window - now); break end
    end
    if excess > 0 then until_ = math.max(until_, window) end
  end
  return until_
end
local short = (wait > 0 and not taken and probe == 'room') and room() or 0
local probing = wait > 0 and not taken and (probe == 'vouched' or (probe == 'room' and short <= 0))
if short > 0 then wait = math.min(wait, short + slack) end
if wait > 0 and not probing and silent == 0 and not cprobe then
  return reply((probe ~= '' and taken) and -1 or 0, wait, avail(free[0]), avail(free[1]),
               pause_left, cap_left, '')
end
if probing then redis.call('HSET', shape, 'probed', fmt(now)) end
"""


#: Lua, after ``SILENT`` (``rblocked``: a requests quota holds it back): ``cprobe``, this
#: request is the probe of a silent server's charge (``_charge``); one that would be but for
#: an answer not read yet, or a probe in flight, polls (``POLL``).
CPROBE = """
local cprobe, bare = false, tonumber(ARGV[13])
local how = string.match(got[7] or '', ',(.*)$')
-- nothing heard of tokens (``sq``: '1' an answer without any header, '0' a reading or a 429)
if bare and silent == 0 and probe == '' and wait > 0 and not rblocked and pause_left <= 0
    and cap_left <= 0 and not got[15] and ((how == nil and got[11] ~= '0') or how == 'silent' or how == 'kept') then
  local fits, n = true, 0
  for i = Q, #ARGV, 5 do
    n = n + 1
    if ARGV[i + 2] == '1' then  -- ours in its window: a learned fixed one's, else sliding
      local sum, W, margin = bare, tonumber(ARGV[i + 1]) - tonumber(ARGV[i + 4]), tonumber(ARGV[i + 4])
      local lo = '(' .. fmt(now - W - margin)
      if kind == 'fixed' and epoch then lo = fmt(epoch + math.floor((now - epoch) / W) * W - margin) end
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, lo, '+inf')) do
        if not string.find(m, ':r:') then sum = sum + est(m) end
      end
      fits = fits and sum <= limit_of(n, tonumber(ARGV[i]))
    end
  end
  local cp = tonumber(string.match(got[14] or '', '^([^,]+)'))
  if fits and (how or got[11] == '1') and not (cp and now - cp < 2 * horizon)
      and not (claim and now - claim < 2 * horizon) then
    cprobe = true
    redis.call('HSET', shape, 'cp', fmt(now) .. ',' .. ARGV[1])
  elseif fits then  -- an answer read, a probe's answered: it may go then
    wait = math.min(wait, """ + repr(POLL) + """)
  end
end
"""
