"""Lua for what a 429 teaches under ``refill="auto"`` in Redis (``REFUSED``): the request
marked refused in the shared log, the effective limit every process's requests in the window
show, and a fixed clock minute of a silent server refuted for every process (``ADMITS``).
Written by :meth:`~llmguard.backends.redis._learning.RedisLearning.refused` (:func:`learn`)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..._admission.ratelimit.charge import OPENING
from ._auto_scripts import LIMITS, SHAPE_TTL
from ._client import Connection
from ._probe_scripts import EST

__all__ = ["NOT_FIXED", "REFUSED", "learn"]

#: Why a 429 refuted a fixed clock minute learned from a server that says nothing (``REFUSED``).
NOT_FIXED = ("a 429 within what a fixed clock minute admits of every process's requests (no "
             "rate-limit header): not one; paced as a sliding window")

#: Lua, in ``REFUSED`` (``at``, ``kind``, ``epoch``, ``limit_of``): ``learn_refusal._admits`` on
#: the shared log. A fixed clock minute counted late, of a server that says nothing ('q'),
#: whose minute, every process's requests surely in it before the refused one and that one at
#: the shared charge factor, has room for it in tokens and requests, did not refuse it: a
#: sliding window from now on, for every process (one process's share of the requests, read
#: in its mirror, explained none of the 429s that the minute's count did).
ADMITS = EST + """
local sh = redis.call('HMGET', shape, 'late', 'charge')
local factor = tonumber(string.match(sh[2] or '', '^([^,]+)')) or """ + repr(OPENING) + """
if kind == 'fixed' and epoch and sh[1] == '1' and string.find(ARGV[2], 'q') and not string.find(ARGV[2], 'p') then
  local tl, tm, tw, rl, k = nil, 0, 0, nil, 0  -- the least token limit (margin, span), requests'
  for i = 3, #ARGV, 5 do
    k = k + 1
    local limit = limit_of(k, tonumber(ARGV[i]))
    if ARGV[i + 2] == '1' and ARGV[i + 3] == '1' and (not tl or limit < tl) then
      tl, tm, tw = limit, tonumber(ARGV[i + 4]), tonumber(ARGV[i + 1]) - tonumber(ARGV[i + 4])
    elseif ARGV[i + 2] ~= '1' and (not rl or limit < rl) then
      rl = limit
    end
  end
  local estimated, count = 0, 0
  if tl then
    local start = epoch + math.floor((at - epoch) / tw) * tw + tm
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, fmt(start), '(' .. fmt(at))) do
      if not string.find(m, ':r:') then estimated, count = estimated + est(m), count + 1 end
    end
  end
  if estimated > 0 and factor * (estimated + est(ARGV[1])) <= tl and (not rl or count + 1 < rl) then
    redis.call('HINCRBY', shape, 'v', 1)
    redis.call('HSET', shape, 'kind', 'sliding', 'epoch', '', 'late', '', 'why', [[""" + NOT_FIXED + """]])
    redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """)
  end
end
"""

#: KEYS: log, shape. ARGV: the log member of the refused request, '1' when no bucket is assumed
#: (any more: ``shape.Shape.assumed``, dropped by a 429 asking for longer than a bucket refills
#: the request; input/output token quotas, for every process: ``unassumed``, read by
#: ``_auto_scripts.RESERVE``), 'p' when it was a probe and 'q' when the process heard its
#: server say nothing (``shape.Shape.quiet``), then limit/window/is_tokens/learns/margin per quota. A fixed minute it refutes is refuted for every process (``ADMITS``). Marks the
#: member refused (``id:r:tokens``: still paced by, not
#: counted by a probe), then ``refusal.learn_limit`` on the shared log: the unit nearest its
#: limit ran out, so the server admits what every process had in its window (the fixed window
#: of the learned boundary, else the last window) before the refused request; recorded as the
#: limit of the quotas of that unit when lower and near the quota (a 429 at the 60th request
#: of an ``rpm=60`` window: 59). Returns the limit learned, or 0.
REFUSED = """
local log, shape = KEYS[1], KEYS[2]
local function fmt(x) return string.format('%.17g', x) end
if string.sub(ARGV[2], 1, 1) == '1' and redis.call('HSETNX', shape, 'unassumed', '1') == 1 then
  redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """)
end
local at = tonumber(redis.call('ZSCORE', log, ARGV[1]) or '')
if not at then return 0 end
-- the server did not count it: marked, for a probe's count (``_auto_scripts.RESERVE``)
local pttl = redis.call('PTTL', log)
redis.call('ZREM', log, ARGV[1])
redis.call('ZADD', log, at, (string.gsub(ARGV[1], ':(%d+)$', ':r:%1')))
if pttl > 0 then redis.call('PEXPIRE', log, pttl) end
local got = redis.call('HMGET', shape, 'kind', 'epoch', 'lims')
local kind, epoch, lims = got[1], tonumber(got[2] or ''), got[3] or ''
local need = tonumber(string.match(ARGV[1], ':(%d+)$'))
""" + LIMITS + ADMITS + """
local fullest, ratio, used_of, n = nil, 0, 0, 0
for i = 3, #ARGV, 5 do
  n = n + 1
  local window, tok, margin = tonumber(ARGV[i + 1]), ARGV[i + 2] == '1', tonumber(ARGV[i + 4])
  if ARGV[i + 3] == '1' then
    local W = window - margin
    local lo, hi = at - W, at
    if kind == 'fixed' and epoch then
      lo = epoch + math.floor((at - epoch) / W) * W
      hi = lo + W
    end
    local used = 0
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', log, fmt(lo), fmt(hi))) do
      if not string.find(m, ':r:') then  -- refused ones (this one too) the server counts not
        used = used + (tok and tonumber(string.match(m, ':(%d+)$')) or 1)
      end
    end
    local limit = limit_of(n, tonumber(ARGV[i]))
    local r = (used + (tok and need or 1)) / limit
    if r > ratio then fullest, ratio, used_of = n, r, used end
  end
end
if not fullest then return 0 end
local i = 3 + (fullest - 1) * 5
local configured = tonumber(ARGV[i])
if used_of >= limit_of(fullest, configured) or used_of < configured - math.max(2, math.floor(configured / 10)) then
  return 0
end
local out, k = {}, 0
for j = 3, #ARGV, 5 do
  k = k + 1
  out[k] = tostring(learned[k] or 0)
  if ARGV[j + 2] == ARGV[i + 2] and ARGV[j + 3] == '1' then out[k] = tostring(used_of) end
end
redis.call('HINCRBY', shape, 'v', 1)
redis.call('HSET', shape, 'lims', table.concat(out, ','))
if not got[1] then redis.call('HSET', shape, 'kind', 'unknown', 'why', 'a 429 in the window') end
redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """)
return used_of
"""


def learn(connection: Connection, member: str, names: list[str], per_quota: list[Any],
          named: Any, charged: bool, flags: str) -> asyncio.Task[Any]:
    """Write a 429 to ``member`` (``REFUSED``, in the background until it lands: the task,
    which its settlement follows; a retry finds the member marked and changes nothing more);
    ``per_quota`` the quotas' arguments, ``flags`` its ARGV[2]. ``named``: the quota its
    message names (only that one learns; a day's: none); ``charged``: a 429 on tokens before
    any reading (the charge, ``_charge``, not a token limit)."""
    args = list(per_quota)
    if named is not None:
        for i in range(0, len(args), 5):
            if not named.minute or args[i + 2] != int(named.tokens) or (named.tokens and charged):
                args[i + 3] = 0
    return connection.keep(REFUSED, [names[0], names[3]], [member, flags, *args],
                           "learning from a 429")
