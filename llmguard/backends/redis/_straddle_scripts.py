"""Lua for :func:`llmguard._admission.ratelimit.apart.straddled` on the shared log: when a fixed
window from a clock minute counted every process's requests from, once what the server served
shows it did not count those admitted within the margin before the minute in it.

On a cold network a burst admitted at :59.2 arrives at :00.0; a fixed window from :00 may
count it. Once every process's requests served from the margin before the minute overflow such
a window while those from the clocks' skew before it fit, it counted the burst before the
minute: the first probe may go now (``_probe_scripts.SILENT``, as ``silent.fresh``), and once
it is served the window from that minute counts from the skew before it (``VERDICT`` writes
``sd<n>`` = ``"minute,since"`` in the shape hash per quota, read by ``_fixed_scripts.FIXED``,
as ``arrived.before`` dates ours in memory). In memory a cold silent bucket started at :59.2
ran 1.11x the ideal without it, 1.01x with it.
"""

from __future__ import annotations

from ..._admission.ratelimit.fixed import CLOCK_SKEW

__all__ = ["STRADDLED"]

#: Lua, after ``fmt`` and ``est`` (``_probe_scripts.EST``): ``straddled(log, done, b, W,
#: margin, tok, limit, now, trusted)``, the time a fixed window of ``W`` s from ``b`` counted
#: every process's from (the clocks' skew before it), or nil: their requests admitted from
#: then to ``now``, answered (``done``) and not refused, at their bare estimates (``trusted``:
#: at most what each was charged, the server giving the unused part back) fit the ``limit``,
#: and those from the margin before ``b`` overflow it.
STRADDLED = """
local function straddled(log, done, b, W, margin, tok, limit, now, trusted)
  local since = b - math.min(margin, """ + repr(CLOCK_SKEW) + """ * W / 60)
  local function served(lo)
    local sum = 0
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, fmt(lo), fmt(now))) do
      if not string.find(m, ':r:') and redis.call('ZSCORE', done, string.match(m, '^[^:]+')) then
        local bare = est(m)
        sum = sum + (not tok and 1 or trusted
                     and math.min(tonumber(string.match(m, ':(%d+)$')), bare) or bare)
      end
    end
    return sum
  end
  if served(since) <= limit and limit < served(b - margin) then return since end
  return nil
end
"""
