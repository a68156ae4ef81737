"""Telling a restarted Redis from a fresh one, and fencing shared state that a restart lost.

A restart (or failover, or FLUSHALL) loses the leases of calls still running and the windows
and buckets of quotas still in use: admitting at once would let a burst through, up to a whole
quota on top of what the provider already counted. A fresh deployment has lost nothing, and
making its first call wait a lease (10 s) or a window (60 s) is what users hit on every deploy.
The server alone cannot tell the two apart (a server restarted without persistence looks new),
so the processes remember: every script keeps a marker in a small HASH next to the state it
guards (same hash slot), and each process remembers the marker it last saw there. A marker
missing while a process still remembers one means the state was lost: nothing new is admitted
for ``fence_for`` seconds (a lease, or the longest window), while renewals put running leases
back. A marker nobody remembers is a fresh start: no wait. With INFO allowed, the marker also
records the server's ``run_id``, so state restored from disk or a replica by another instance is
fenced even by processes started after the restart. No INFO is needed otherwise, and an idle
period does not re-fence (the marker lives a day after its last use, and a process forgets a
marker it has not seen for half that).

The marker also carries the last server time seen: when the server's clock steps back, the
scripts shift the times they keep by the step (``step``), instead of counting old admissions
as future ones (a 120 s step back stalled admission for two minutes).
"""

from __future__ import annotations

import asyncio

from ..._core.sweep import SWEEP_AT, sweep

__all__ = ["FENCE", "MARK_TTL", "Marks"]

#: Seconds a marker lives after its last use (every key llmguard writes expires).
MARK_TTL = 86_400

#: Lua, run after ``now`` is set, with locals ``fence`` (the marker HASH's key), ``fence_for``
#: (seconds), ``known`` (the marker this process remembers, or '') and ``proposed`` (a new
#: marker). Leaves ``ready`` (server time before which nothing new is admitted), ``mark`` (to
#: return to the process) and ``step`` (seconds the clock stepped back since the last call).
FENCE = f"""
local info, run = redis.pcall('INFO', 'server'), ''
if type(info) == 'string' then run = string.match(info, 'run_id:(%w+)') or '' end
local got = redis.call('HMGET', fence, 'mark', 'run', 'ready', 'last', 'born')
local mark, ran = got[1], got[2] or ''
local ready, last, born = tonumber(got[3]) or 0, tonumber(got[4]), tonumber(got[5]) or now
local step = 0
if last and now < last - 0.001 then
  step = last - now
  ready, born = ready - step, born - step
end
if not mark then
  mark, born = proposed, now
  if known ~= '' then ready = now + fence_for else ready = 0 end
elseif run ~= '' and ran ~= '' and ran ~= run then
  mark, born, ready = proposed, now, now + fence_for
elseif known ~= '' and known ~= mark then
  ready = math.max(ready, born + fence_for)
end
redis.call('HSET', fence, 'mark', mark, 'run', run, 'ready', string.format('%.17g', ready),
           'last', string.format('%.17g', now), 'born', string.format('%.17g', born))
redis.call('PEXPIRE', fence, {MARK_TTL * 1000})
"""


class Marks:
    """The markers this process last saw, per marker key (bounded: forgotten ones are swept)."""

    __slots__ = ("_seen", "_sweep_at", "_seq", "owner")

    def __init__(self, owner: str) -> None:
        self._seen: dict[str, tuple[str, float]] = {}
        self._sweep_at = SWEEP_AT
        self._seq = 0
        #: Unique per process and connection: proposed markers never collide.
        self.owner = owner

    def known(self, fence: str) -> str:
        """The marker to send: the one last seen, unless that is too old to trust ('')."""
        seen = self._seen.get(fence)
        if seen is None or asyncio.get_running_loop().time() - seen[1] > MARK_TTL / 2:
            return ""
        return seen[0]

    def proposed(self) -> str:
        self._seq += 1
        return f"{self.owner}.{self._seq}"

    def saw(self, fence: str, mark: bytes | str) -> None:
        now = asyncio.get_running_loop().time()
        if fence not in self._seen and len(self._seen) >= self._sweep_at:
            self._sweep_at = sweep(self._seen, lambda seen: now - seen[1] > MARK_TTL / 2)
        self._seen[fence] = (mark.decode() if isinstance(mark, bytes) else mark, now)
