"""Lua keeping what a token bucket's bound needs of ours older than the shared log (memory's
:mod:`llmguard._admission.ratelimit.carry`): the log keeps one window (two for a fixed one
counted late), the most a bucket charges (``_charged_scripts.CHARGED``) reads ours since any
one of them, and a bucket is full at most as the first of ours went.

A silent server's charge came down in memory from the opening burst on (ours since it, paced
at the opening factor, and each served probe beyond that): one window later the burst had
left Redis's log, the bound from any of ours still logged (the bucket dry there as we count
ours, taken as full) stayed above the opening factor, and a cold silent bucket was paced at
1.15x its charge for good (1.23x the ideal from :10 where memory ran 1.08x).
"""

from __future__ import annotations

__all__ = ["ANCHORED", "TRIM"]

#: Lua in ``_auto_scripts.RESERVE`` (``est`` defined, ``got[11]`` the shape's ``sq``): trims
#: the log to ``keep``; while a silent server is read (``sq``), ours trimmed, refused left
#: out, are folded into the shape HASH: ``c0`` when the first of them went (server time, kept
#: through a clock stepped back), ``cn`` their number, ``cs`` their bare estimates. Dropped
#: once the log is empty: a window with nothing of ours refilled any bucket, a new first then.
TRIM = """
if got[11] == '1' then
  local c0 = tonumber(redis.call('HGET', shape, 'c0') or '')
  if c0 and step > 0 then redis.call('HSET', shape, 'c0', fmt(c0 - step)) end
  local trimmed = redis.call('ZRANGEBYSCORE', log, '-inf', now - keep, 'WITHSCORES')
  if #trimmed > 0 then
    local n, sum = 0, 0
    for j = 1, #trimmed, 2 do
      if not string.find(trimmed[j], ':r:') then n, sum = n + 1, sum + est(trimmed[j]) end
    end
    redis.call('HSETNX', shape, 'c0', trimmed[2])
    redis.call('HINCRBY', shape, 'cn', n)
    redis.call('HINCRBY', shape, 'cs', sum)
  end
end
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - keep)
if got[11] == '1' and redis.call('ZCARD', log) == 0 then redis.call('HDEL', shape, 'c0', 'cn', 'cs') end
"""

#: Lua in ``CHARGED``'s served branch, after its loop over every process's logged up to the
#: probe (``count``, ``sum``; ``carried``: the HASH's ``c0``, ``cn``, ``cs``): the most a
#: bucket charges from the first of ours on, ours trimmed since included.
ANCHORED = """
    if carried[1] then
      local c0, n0, s0 = tonumber(carried[1]), tonumber(carried[2] or '0'), tonumber(carried[3] or '0')
      if c0 <= at and sum + s0 > 0 then
        bucket = math.min(bucket, (limit + rate * (at - c0) - count - n0) / (sum + s0))
      end
    end
"""
