"""Lua for a learned fixed window in Redis (``refill="auto"``): ``fixed.FixedCount`` on the
shared log, a fragment of ``_auto_scripts.RESERVE``'s loop over the quotas.

The count of a window is the log's units admitted in it, an admission within ``margin`` before a
boundary or within its skew after it counting in both windows (``fixed.skew``: for a boundary
read from a reset, how far after it the server's may lie, as the process that learned it
narrowed it (the shape hash's ``doubt``; the margin when not known); for one on the wall
clock's minute, only the clocks' skew,
``fixed.CLOCK_SKEW`` per minute: the shape hash's ``late``, which marks a clock minute learned
from a server that never pointed to it, as ``shape.Shape.late`` does in memory). A server that counts a request late (LiteLLM's proxy counts
it when a worker takes it from its queue: the shape hash's ``late``) may count ours admitted in
the window before and still in flight at its boundary in the new one, so the current window's
count also holds those, from every process: admitted in the window before (its later window is
that one), not refused (``:r:``), and ended (the ``done`` ZSET: when its settlement ran) after
the boundary, or after the first answer that showed the window (``FLIP``), or not yet.
Computed once a window (``FixedCount._roll``) and again after that answer, kept in the state
hash as ``carry<n>`` = ``"boundary,units,since"``; the log keeps the window before for it (``keep``). A
settlement of one carried (``_auto_scripts.SETTLING``) changes it too, as ``FixedCount.adjust``:
a refund (it never left) gives its units back, a new token count replaces the reserved one.

A silent server's clock minute whose first probe was served after a burst straddling it
(``sd<n>`` in the shape hash: ``_straddle_scripts``) counts from the clocks' skew before it,
not the margin: the server counted that burst before the minute (``arrived.before``).

The fragment reads the loop's locals (``n``, ``window``, ``margin``, ``tok``, ``unit``,
``limit``) and the script's (``epoch``, ``late``, ``keep``, ``units``, ``done``, ``log``), and
sets ``wait`` (the skew past the start of the first window with room) and ``avail``.
"""

from __future__ import annotations

from ..._admission.ratelimit.fixed import CLOCK_SKEW

__all__ = ["FIXED", "FLIP"]

#: Lua: the fixed-window pacer of quota ``n`` (see the module's docstring).
FIXED = """
    local W = window - margin
    -- how far the boundary may be off early (``fixed.skew``): on the wall clock's minute (a
    -- window counted late is one: ``shape.Shape.late``) only the clocks' skew, else its
    -- ``doubt`` (at least that skew), the margin when not known
    local clock = math.min(margin, """ + repr(CLOCK_SKEW) + """ * W / 60)
    local early = late and clock or (doubt and math.max(clock, doubt) or margin)
    local function index(t) return math.floor((t - epoch) / W) end
    local current = index(now)
    local function carried()  -- ours in flight at the boundary of the current window
      local b, field = epoch + current * W, 'carry' .. n
      -- answered before the first answer that showed this window (``FLIP``): counted before it
      local since = math.max(b, tonumber(redis.call('HGET', state, 'flip_' .. (tok and 't' or 'r')) or '') or b)
      local cb, sum, cs = string.match(redis.call('HGET', state, field) or '', '^([^,]+),([^,]+),(.*)$')
      if cb == fmt(b) and cs == fmt(since) then return tonumber(sum) end
      sum = 0
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, fmt(b - W - margin), '(' .. fmt(b - margin))) do
        local ended = tonumber(redis.call('ZSCORE', done, string.match(m, '^[^:]+')) or '')
        if not string.find(m, ':r:') and (not ended or ended > since) then
          sum = sum + (tok and tonumber(string.match(m, ':(%d+)$')) or 1)
        end
      end
      redis.call('HSET', state, field, fmt(b) .. ',' .. sum .. ',' .. fmt(since))
      if redis.call('PTTL', state) < 0 then redis.call('PEXPIRE', state, math.ceil(keep * 1000) + 1000) end
      return sum
    end
    local carry = late and carried() or 0
    -- a silent server's minute that counted every process's from the skew before it, not
    -- the margin (``_straddle_scripts``: a burst admitted before it, counted before it)
    local sd, since = string.match(redis.call('HGET', shape, 'sd' .. n) or '', '^([^,]+),(.+)$')
    sd, since = tonumber(sd or ''), tonumber(since or '')
    local function count(idx)
      local lo = epoch + idx * W
      lo = (sd and math.abs(lo - sd) < 1e-6) and since or lo - margin
      return units(lo, epoch + (idx + 1) * W + early, tok) + (idx == current and carry or 0)
    end
    local at, most = now, 0
    for _ = 1, 4 do
      local blocked = nil
      for _, idx in ipairs({index(at - early), index(at + margin)}) do
        local c = count(idx)
        if at == now then most = math.max(most, c) end
        if c + unit > limit and c > 0 and (blocked == nil or idx > blocked) then blocked = idx end
      end
      if blocked == nil then break end
      at = epoch + (blocked + 1) * W + early + 1e-6
    end
    if at > now then wait = math.max(wait, at - now + slack) end
    avail = limit - most
"""

#: Lua, in ``_learned_scripts.READING`` (``u``, ``read_at``, ARGV[1], the quotas from ARGV[6]): under a
#: learned fixed window counted late, the reading whose ``remaining`` was the first up from the
#: one before since the current window's boundary, in the order one process read them
#: (``fixed.FixedCount.read``: 'f' after ARGV[1]; two processes' readings interleaved are not
#: in the order the server made them, a late one looked up), shows the server counting afresh:
#: ``flip_<u>``, when, for every process; ours answered before it were counted before the
#: boundary and are carried no more (``carried``, recounted: ``FixedCount.flipped``).
FLIP = """
local sh = redis.call('HMGET', KEYS[3], 'kind', 'late', 'epoch')
if string.find(ARGV[1], 'f', 2, true) and sh[1] == 'fixed' and sh[2] == '1' and sh[3]
    and redis.call('PTTL', state) > 0 then
  local epoch = tonumber(sh[3])
  for i = 6, #ARGV, 5 do
    if ARGV[i + 2] == unit and ARGV[i + 3] == '1' then
      local W = tonumber(ARGV[i + 1]) - tonumber(ARGV[i + 4])
      local b = epoch + math.floor((read_at - epoch) / W) * W
      if (tonumber(redis.call('HGET', state, 'flip_' .. u) or '') or -math.huge) < b then
        redis.call('HSET', state, 'flip_' .. u, fmt(read_at))
      end
      break
    end
  end
end
"""
