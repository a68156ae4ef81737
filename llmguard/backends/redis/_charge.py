"""What a server that says nothing charges against a token quota, learned once in Redis for
every process sharing a key (``refill="auto"``; in memory, :mod:`llmguard._admission.ratelimit.probing`
and :meth:`~llmguard._admission.ratelimit.charge.Charge.refused`).

Each process sees its own requests only; the server counts every process's. A 429 read
against one process's third of the traffic took its factor to the ceiling (3x: that process
then reserved three times what the server charges), and a probe served bounded nothing. So
the factor is learned on the shared log, whose members carry each request's bare estimate
(``member~estimate:tokens``), and kept in the key's shape HASH as ``charge`` (``"factor,how"``,
:meth:`~llmguard._admission.ratelimit.charge.Charge.shared`'s form), which every process's
mirror adopts at its next reservation (:class:`SharedCharge`):

* **Probe** (``_probe_scripts.CPROBE`` in ``_auto_scripts.RESERVE``). While nothing was heard
  of tokens, a request held back by the token quotas alone, which every process's bare
  estimates in the window (a learned fixed one's, else a sliding one) leave room for, goes as
  the charge's probe (admitted ``5``), one at a time for all processes (``cp``: when and
  whose, expiring after two spans), never beside a probe of the shape (``sp``); one that
  would go but for an answer not read yet or a probe in flight polls (``POLL``).
* **Served** (``CHARGED``). The server counted every process's requests up to it at most at
  the quota: the factor comes down to the most that the shape learned allows (a sliding
  window: ours in the window; a token bucket: ours since any one, less its refill since; a
  fixed clock window: ours since its start), the largest of the three while the shape is
  unknown, each count rounded up (one token less each, as in memory), never under what a 429
  showed (``cl``).
* **Refused** (a 429 to any request of a token quota the requests quota does not explain):
  the server charged every process's requests that may have been counted before it more than
  the quota less it, so at least ``limit`` over their estimates (``cl``; the factor is raised
  to it). The probe's ends the probing (``ck``: kept, as in memory), and leaves the shape's
  probing as it was (a 429 of another request ends that: ``_silent``).

Until the charge's probe was refused, a probe of the shape beyond a sliding window goes only
when the window is full at the least the server charges (``cl`` times the bare estimates,
``_probe_scripts.SILENT``): full only as we count ours at the opening factor, a strict server
(charging 1.11x our estimate) served it, no sliding window was concluded, and the burst paced
within a fixed window drew 5-9 429s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..._admission.ratelimit.backend import MemoryBackend
from ..._admission.ratelimit.charge import MOST, OPENING, Charge
from ..._admission.ratelimit.fixed import CLOCK_SKEW
from . import _silent
from ._auto_scripts import SHAPE_TTL
from ._client import Connection
from ._probe_scripts import EST

__all__ = ["CHARGED", "STAGE", "Mirror", "SharedCharge", "alone", "estimated", "refused", "settled"]

#: The charge probe's stage in ``AutoTicket.silent`` and RESERVE's reply.
STAGE = 5


def estimated(member: str, estimate: int) -> str:
    """A log member prefix carrying the request's bare estimate (read by the Lua below)."""
    return f"{member}~{estimate}"


#: KEYS: shape, log. ARGV: outcome ('served', 'refused', 'gone': never sent), the request's log
#: member, then limit/window/is_tokens/learns/margin per quota. Applies what it showed to the
#: shared factor (module docstring); returns 1 when the factor changed.
CHARGED = EST + """
local shape, log, outcome, member = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.17g', x) end
local got = redis.call('HMGET', shape, 'cp', 'charge', 'cl', 'lims', 'kind', 'epoch')
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
        bucket = math.min(bucket, (limit + rate * (last - s) - count) / sum)
      end
    end
    sliding = sliding > 0 and (limit - sn) / sliding or math.huge
    local clocked = csum > 0 and (limit - cn) / csum or math.huge
    local most = ({sliding = sliding, bucket = bucket, fixed = clocked})[kind]
        or math.max(sliding, bucket, clocked)  -- (the shape unknown: any of the three)
    if bound == nil or most < bound then bound = most end
  end
end
-- a 429 to a request whose requests quota was the fullest, as we count ours (``refusal``:
-- the 6th of 6 requests of a server admitting 5), is that quota's, not the charge's (taken
-- for the charge's, a token quota that never bound was charged 3x from then on)
if floor and not probe and rratio >= tratio then floor = nil end
local new = factor
if floor then
  least = math.max(least, math.min(""" + repr(MOST) + """, floor))
  redis.call('HSET', shape, 'cl', fmt(least))
  new = math.max(factor, least)
  if probe then redis.call('HSET', shape, 'ck', '1') end
elseif bound and bound < factor then
  new = math.max(1.0, least, bound)
end
if probe or floor then redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """) end
if math.abs(new - factor) < 1e-9 and got[2] then return 0 end
redis.call('HSET', shape, 'charge', string.format('%.4f', math.ceil(new * 10000 - 1e-6) / 10000) .. ',' .. ((floor or least > 1.0) and 'kept' or 'silent'))
redis.call('PEXPIRE', shape, """ + str(SHAPE_TTL * 1000) + """)
return 1
"""


class SharedCharge(Charge):
    """A process's mirror of the shared charge (``window.charge`` under Redis, made with its
    window: :class:`Mirror`): what a 429 shows is learned on the shared log (:func:`refused`),
    not from this process's third of it, and the factor learned for a server that says
    nothing is adopted as published."""

    __slots__ = ("alone",)

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        #: The 429 being read is to a request admitted while Redis was down (``on_error=
        #: "local"``): no shared log holds it, so this process learns from it as in memory.
        self.alone = False

    @property
    def partial(self) -> bool:  # type: ignore[override]
        """This process's part of every process's requests (``_refused_scripts.ADMITS`` reads
        them all), but for a request admitted ``alone``."""
        return not self.alone

    def refused(self, window: Any, now: float, ticket: Any, limit: int) -> bool:
        """Nothing locally (the 429 is read against every process's requests, ``CHARGED``),
        unless the request was admitted ``alone`` (:meth:`Charge.refused`)."""
        return self.alone and Charge.refused(self, window, now, ticket, limit)

    def follow(self, window: Any, now: float, shared: str) -> None:
        """Adopt ``shared`` (``"factor,how"``) as published: a calibration while nothing was
        heard (:meth:`Charge.adopt`), or what a server that says nothing was shown to charge
        (its factor, down or up: ours in the mirror count at it once lowered)."""
        shared = shared.decode() if isinstance(shared, bytes) else shared
        if self.how == "opening" and not shared.endswith((",silent", ",kept")):
            self.adopt(shared)
            return
        factor, _, how = shared.partition(",")
        if self.heard or how not in ("silent", "kept"):
            return
        was, self.factor = self.factor, min(MOST, max(1.0, float(factor)))
        self.silent, self.kept = True, how == "kept"
        if self.factor < was:
            self.rescale(window, now)


class Mirror(MemoryBackend):
    """A :class:`~llmguard.backends.redis.RedisBackend`'s own windows (what this process
    learns from its answers, and its limits while Redis is down), each made with a
    :class:`SharedCharge` from the start: none is converted mid-call, and a window first
    made during an outage is of the same kind as one made at a reservation in Redis."""

    __slots__ = ()
    charge = SharedCharge


@contextmanager
def alone(window: Any, local: bool) -> Iterator[None]:
    """While a 429 is read in ``window``: to a ``local`` request (admitted while Redis was
    down, no shared log holds it), what it shows of the charge is learned by this process
    (:attr:`SharedCharge.alone`)."""
    charge = window.charge
    if charge is None or not local:
        yield
        return
    charge.alone = True
    try:
        yield
    finally:
        charge.alone = False


def _tell(connection: Connection, names: list[str], outcome: str, member: str,
          quotas: list[Any]) -> None:
    connection.keep(CHARGED, [names[3], names[0]], [outcome, member, *quotas],
                    "sharing what the server charges")


def settled(connection: Connection, ticket: Any, tokens: int | None, names: list[str],
            quotas: list[Any]) -> None:
    """A probe ``ticket`` was answered (``tokens``) or never sent (None): the charge's here,
    a shape's by ``_silent``."""
    if ticket.silent != STAGE:
        _silent.settled(connection, ticket, tokens, names, quotas)
        return
    ticket.silent = 0
    _tell(connection, names, "gone" if tokens is None else "served", ticket.member, quotas)


def refused(connection: Connection, window: Any, ticket: Any, names: list[str],
            quotas: list[Any]) -> bool:
    """A 429 to ``ticket`` (an ``AutoTicket``) while the server has said nothing of tokens:
    read on the shared log. True when it was the charge's probe: nothing else for the shape
    (a 429 of another request ends its probing, ``_silent``; this one drew it)."""
    charge, probe = window.charge, ticket.silent == STAGE
    if probe:
        ticket.silent = 0
    if charge is not None and not charge.heard and (charge.silent or probe):
        _tell(connection, names, "refused", ticket.member, quotas)
    return probe
