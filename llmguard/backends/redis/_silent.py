"""A server that says nothing, probed once for every process sharing a key in Redis
(``refill="auto"``): which probe a reservation is, and what its answer (or 429) tells every
process (``_probe_scripts`` has the rule; in memory, :mod:`llmguard._admission.ratelimit.silent`).

A probe's verdict is written at once (not with the process's next reservation: a process
that sends nothing more would leave the others without it, and a probe of theirs would go
again), and adopted by every process, the prober too, at its next reservation, as a shape
published by another (``_learning``). That the server says nothing reaches Redis with the
process's next settlement or reservation of the key (``_peek.quiet``), before what they settle:
from then on every call's end is kept, as a clock window counted late needs (``done``)."""

from __future__ import annotations

from typing import Any

from ..._admission.ratelimit.fixed import CLOCK_SKEW
from ._auto_scripts import LIMITS, SHAPE_TTL
from ._client import Connection
from ._probe_scripts import EST
from ._refuted_scripts import BOUNDS
from ._straddle_scripts import STRADDLED

__all__ = ["VERDICT", "refused", "settled"]

#: KEYS: shape, state, log, done. ARGV: the probe's member prefix, what became of it
#: ('served', 'refused', 'gone': never sent, 'heard': a 429 to another request), why, its log
#: member, why a bucket (``OVERFLOWED``), then limit/window/is_tokens/learns/margin per quota.
#: Applies the verdict of the probe in flight (``sp``) if it is that member's (a refused one
#: leaves the log, marked refused or not: the server counted none of it, and a sliding log
#: holding it sent the quota's last request a window late); 'heard' ends the probing whatever
#: the probe. The first probe served (``3``) is a bucket's at once when every process's
#: requests served in the clock minute before it overflow a fixed window of a quota
#: (``apart.overflowed``: surely counted in it, sent the clocks' skew after its start and
#: arrived that skew before its end; answered (``done``), not refused, at their bare
#: estimates, the least a server charges; not once the server was shown to give unused
#: tokens back, ``trusted``): it admitted them, so it counts no such window. A probe served
#: lowers a bucket's ceiling, and one beyond the bucket only at a guessed factor proves no
#: fixed window (``_refuted_scripts``: ``served``, ``cheaper``); a first probe served after a
#: burst straddling the minute dates it before the minute (``sd<n>``, ``_straddle_scripts``,
#: as ``silent.served``: ``apart.straddled``, ``arrived.before``); a floor a 429 showed above
#: the ceiling, once a first probe was served, is a fixed window (``refute``). Returns 1 when
#: it changed something.
VERDICT = EST + """
local shape, outcome, why = KEYS[1], ARGV[2], ARGV[3]
local function fmt(x) return string.format('%.17g', x) end
""" + BOUNDS + STRADDLED + """
local got = redis.call('HMGET', shape, 'sp', 'kind')
if outcome == 'heard' then
  if redis.call('HGET', shape, 'sq') ~= '1' then return 0 end
  redis.call('HSET', shape, 'sq', '0')
  redis.call('HDEL', shape, 'sp', 'ss')
  return 1
end
local stage, b, member = string.match(got[1] or '', '^(%d),[^,]+,([^,]+),(.+)$')
if member ~= ARGV[1] or (got[2] and got[2] ~= 'unknown') then return 0 end
redis.call('HDEL', shape, 'sp')
if outcome == 'gone' then return 1 end
if outcome == 'served' then served(shape, KEYS[3], ARGV[4], 6) end
if outcome == 'refused' then redis.call('ZREM', KEYS[3], ARGV[4], (string.gsub(ARGV[4], ':(%d+)$', ':r:%1'))) end
local kind = outcome == 'refused' and 'sliding' or (stage == '4' and 'fixed' or nil)
if stage == '6' then kind = outcome == 'refused' and 'fixed' or 'bucket' end  -- beyond the minute
local function overflowed()
  local lims = redis.call('HGET', shape, 'lims') or ''
""" + LIMITS + """
  if string.match(redis.call('HGET', shape, 'charge') or '', ',trusted$') then return false end
  local n = 0
  for i = 6, #ARGV, 5 do
    n = n + 1
    local margin, tok = tonumber(ARGV[i + 4]), ARGV[i + 2] == '1'
    local W = tonumber(ARGV[i + 1]) - margin
    local skew = math.min(margin, """ + repr(CLOCK_SKEW) + """ * W / 60)
    local used = 0
    if ARGV[i + 3] == '1' then
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], fmt(b - W + skew), fmt(b - skew - margin))) do
        if not string.find(m, ':r:') and redis.call('ZSCORE', KEYS[4], string.match(m, '^[^:]+')) then
          used = used + (tok and est(m) or 1)
        end
      end
      if used > limit_of(n, tonumber(ARGV[i])) then return true end
    end
  end
  return false
end
-- the first probe served: per quota, ``sd<n>`` when the window from the minute counted every
-- process's requests from (``_straddle_scripts``), none when from the margin before it
local function dated(b)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local trusted = string.match(redis.call('HGET', shape, 'charge') or '', ',trusted$') ~= nil
  local lims = redis.call('HGET', shape, 'lims') or ''
""" + LIMITS + """
  local n = 0
  for i = 6, #ARGV, 5 do
    n = n + 1
    local margin = tonumber(ARGV[i + 4])
    local since = ARGV[i + 3] == '1' and straddled(KEYS[3], KEYS[4], b, tonumber(ARGV[i + 1]) - margin,
        margin, ARGV[i + 2] == '1', limit_of(n, tonumber(ARGV[i])), now, trusted)
    if since then redis.call('HSET', shape, 'sd' .. n, fmt(b) .. ',' .. fmt(since))
    else redis.call('HDEL', shape, 'sd' .. n) end
  end
end
if stage == '3' and outcome == 'served' and overflowed() then kind, why = 'bucket', ARGV[5] end
if stage == '4' and outcome == 'served' and cheaper(shape, KEYS[3], ARGV[4], tonumber(b), 6) then kind = nil end
if not kind then
  redis.call('HSET', shape, 'ss', b)
  if stage == '3' then dated(tonumber(b)) end
  refute(shape, KEYS[2])  -- (a 429 read before showed no bucket: a fixed window)
  return 1
end
redis.call('HINCRBY', shape, 'v', 1)
redis.call('HSET', shape, 'kind', kind, 'why', why, 'epoch', kind == 'fixed' and b or '',
           'late', kind == 'fixed' and '1' or '')
redis.call('HDEL', shape, 'ss')
if kind == 'fixed' then
  redis.call('HDEL', KEYS[2], 'pause', 'until_r', 'until_t')
  fixed_factor(shape)
end
redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """)
return 1
"""


#: Why each verdict was reached, as ``statistics().shape`` says it.
WHY = {("refused", 3): "a request beyond a sliding window, just after the clock minute, was "
                       "refused (429; no rate-limit header): paced as a sliding window",
       ("refused", 4): "a request beyond what a token bucket of the quota holds was refused "
                       "(429; no rate-limit header): paced as a sliding window",
       ("served", 4): "a request beyond what a token bucket of the quota holds was served (no "
                      "rate-limit header): a fixed window starting afresh at each minute",
       ("refused", 6): "a request beyond a fixed window from the clock minute, within a token "
                       "bucket, was refused (429; no rate-limit header): a fixed window "
                       "starting afresh at each minute",
       ("served", 6): "a request beyond a fixed window from the clock minute, within a token "
                      "bucket, was served (no rate-limit header): a token bucket"}
#: Why a first probe served showed a bucket (``VERDICT``, as ``silent.served`` in memory).
OVERFLOWED = ("a request beyond a sliding window was served just after the clock minute, and "
              "every process's requests served in the minute before overflowed a fixed window "
              "(no rate-limit header): a token bucket")


def _verdict(connection: Connection, names: list[str], member: str, outcome: str,
             why: str = "", quotas: list[Any] | None = None) -> None:
    connection.keep(
        VERDICT, [names[3], names[1], names[0], names[4]],
        [member.rpartition(":")[0], outcome, why, member, OVERFLOWED, *(quotas or ())],
        "sharing what a probe showed")


def settled(connection: Connection, ticket: Any, tokens: int | None, names: list[str],
            quotas: list[Any]) -> None:
    """``ticket`` (a probe's: its ``silent`` stage) was answered (``tokens``) or never sent
    (None): served, or its claim given back for another probe (``quotas``: limit/window/
    is_tokens/learns/margin per quota)."""
    stage, ticket.silent = ticket.silent, 0
    outcome = "gone" if tokens is None else "served"
    _verdict(connection, names, ticket.member, outcome,
             WHY.get((outcome, stage), ""), quotas)


def refused(connection: Connection, window: Any, now: float, ticket: Any,
            names: list[str]) -> None:
    """A 429 to ``ticket``: a probe's shows a sliding window (or a bucket), paced so by every
    process, this one at once (its mirror then supposes no minute of its own); another's
    ends the probing, as a reading does (``now``: unused, as the memory's learning takes it)."""
    stage = getattr(ticket, "silent", 0)
    if not stage:
        if window.shape is not None and window.shape.quiet:
            _verdict(connection, names, ":", "heard")
        return
    ticket.silent = 0
    why = WHY[("refused", stage)]
    _verdict(connection, names, ticket.member, "refused", why)
    if stage != 6 and window.shape is not None and window.shape.kind == "unknown":
        window.shape.learn("sliding", why)  # (beyond the minute: a fixed window, adopted)
        window.shape.probes = 0
