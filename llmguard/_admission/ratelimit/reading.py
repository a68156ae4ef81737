"""How much a provider's ``remaining`` header leaves us, read against our requests in flight.

A header counts the request it answers (its ticket) and whatever else reached the server
before it. Requests sent one after another arrive in order, but requests sent within a
moment of each other (a burst; ``spread`` seconds, the window's margin for the time a
request takes to get there) may arrive in any order: network jitter of a few milliseconds
shuffles a burst. So the server's count covers an unknown subset of those, and only a lower
bound on what it has left once all of ours landed is certain: ``remaining`` less everything
of ours sent from ``spread`` before the ticket on (:meth:`Readings.read`). One reading of a
shuffled burst may be far below the truth (the last to arrive, read as if it came first,
subtracts most of the burst twice: a bucket modelled at -56 of 60, a minute with nothing
sent). But every reading of the same burst bounds the same quantity, so the best bound of a
group holds: the group's highest, less ours admitted since, is as
certain as each, and the first of a burst to arrive reads it exactly. Each reading still
lowers our own count to that bound (a count that gave back more than the server did, or
missed another client's requests, is corrected by the next answer).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .queued import subtracted

__all__ = ["Readings"]


class Readings:
    """Our recent admissions (for each entry's ``near``) and, per unit, the group of readings
    now being combined."""

    __slots__ = ("spread", "recent", "groups")

    def __init__(self, spread: float) -> None:
        #: Seconds within which ours may reach the server in any order.
        self.spread = spread
        self.recent: deque[Any] = deque()
        #: Per unit: [send time of the ticket that opened it, its best bound, when that was
        #: read, ours admitted then, the first seq it subtracted, ours of those refunded (or
        #: counted lower: :mod:`.recounted`) since, the marks of ours queued below it
        #: subtracted too (:mod:`.queued`), the seq of the ticket it read].
        self.groups: dict[bool, list[Any]] = {}

    def admit(self, now: float, entry: Any) -> None:
        """Record ``entry`` (admitted at ``now``): its ``near`` is the first of ours admitted
        within ``spread`` before it (itself when none)."""
        recent, horizon = self.recent, now - self.spread
        while recent and recent[0].time < horizon:
            recent.popleft()
        recent.append(entry)
        first = recent[0]
        entry.near = (first.seq, first.tseq)

    def refund(self, entry: Any, tracks: Any = ()) -> None:
        """``entry`` never reached the server: a bound that subtracted it gets it back, and so
        does the level of a learned bucket of ``tracks`` that the bound sets (``Bucket.exact``)
        when the bound subtracted it as admitted before its reading (a call queued below,
        counted again as it leaves that queue: the bound's burst is all of ours at first)."""
        for tokens, group in self.groups.items():
            if entry.seq >= group[4] or subtracted(entry.queued, group[6]):
                units = entry.tokens if tokens else entry.live
                group[5] += units
                if (entry.tseq if tokens else entry.seq) >= group[3]:
                    continue  # admitted after the reading: its own refund gives it back
                for track in tracks:
                    bucket = getattr(track, "bucket", None)
                    if bucket is not None and bucket.exact and track.quota.tokens is tokens:
                        bucket.give_back(units)

    def unseen(self, now: float, tokens: bool, ticket: Any) -> int:
        """Units of ours a reading as of its answer (a reset that is a moment: Anthropic's)
        may not count: admitted within ``spread`` before ``now``, so on the way there as the
        answer left the server for all we know (its own request, ours refunded or refused
        and ours queued below, which :meth:`after` counts, excepted). A cap it sets leaves
        them out: read as counting every one of ours sent, a shuffled wave's answers each set
        the cap past ours sent on the one before (0-10 ms each way: a gateway's minute from
        :20 went 31 where it had room for 10, 88 429s). A bucket's level, which a reading
        only drains, keeps the reading as it was."""
        horizon = now - self.spread
        return sum(entry.tokens if tokens else 1 for entry in self.recent
                   if entry.time >= horizon and entry is not ticket and entry.live
                   and not entry.refused and not entry.queued)

    @staticmethod
    def after(log: Any, tokens: bool, ticket: Any, issued: int,
              queued: Any) -> tuple[int, int]:
        """Units of ours (not refunded) the server had not counted as it counted ``ticket``
        (None: as of now, all of ours sent), with the marks of ours queued below so far when
        they are among them (else 0). Those admitted from ``ticket.near`` on, the ticket
        excepted, as admitted (a reconciliation since changes nothing the server counted
        then), and every one of ``queued`` (ours whose call waits in an inner queue: not sent
        yet, whenever admitted), counted in ``log`` (a sliding log) when it holds them, else
        from ``issued`` so far (refunded ones then count too; queued ones before ``near``
        not known there)."""
        if ticket is None:
            return queued.units(tokens), queued.marks
        seq, tseq = ticket.near
        entries = getattr(log, "entries", None)
        if not entries or entries[0].seq > seq:
            return issued - (tseq + ticket.tokens if tokens else seq + 1), 0
        after, following = 0, issued  # tokens: an entry took its successor's tseq less its own
        for entry in reversed(entries):
            if entry.seq < seq:
                break
            if entry.live and entry is not ticket and not entry.queued:  # (queued: below)
                if not tokens:
                    after += 1
                elif entry.owner is not None and entry.tokens != following - entry.tseq:
                    # not settled, counted anew at a factor since (down or up: as admitted,
                    # a factor a 429 raised left 40 tokens of room the server never had)
                    after += entry.tokens
                else:
                    after += following - entry.tseq
            following = entry.tseq
        return after + queued.units(tokens), queued.marks

    def read(self, now: float, tokens: bool, remaining: int, ticket: Any, after: int,
             issued: int, marks: int = 0) -> tuple[int, float, int, int, int] | None:
        """What a reading of ``remaining`` (requests or ``tokens``) in the answer to ``ticket``
        (None: as of now) leaves us, with ``after`` units of ours (not refunded) admitted from
        the ticket's ``near`` on, the ticket excepted, and ``issued`` units admitted so far:
        ``(left, since, base, marks, seq)``, the best certain bound of the open group of
        readings with this one, as of now but for the refill since ``since`` (a bucket adds
        it), which subtracted ours from seq ``base`` on but its own ticket's (seq ``seq``: the
        one it read, this one's or an older one's; -1: none) and those queued below with
        ``marks`` marked (``after`` counts them: :mod:`.queued`); or None for a reading of an
        older burst than the open group's (superseded).

        One reading's bound is ``remaining`` less ours that may have arrived after the ticket
        (``after``: every one sent from ``spread`` before it on). A reading of a ticket sent
        within ``spread`` of the one that opened the group reads the same burst: the higher
        bound of the two holds, the older one less ours admitted since (plus those of them
        refunded)."""
        if ticket is None:
            self.groups.pop(tokens, None)
            return remaining - after, now, issued, marks, -1
        seq, left = ticket.near[0], remaining - after
        at = ticket.time
        group = self.groups.get(tokens)
        if group is not None:
            anchor, best, since, counted, base, returned, marked, read = group
            if abs(at - anchor) <= self.spread:
                aged = best - (issued - counted) + returned
                if aged >= left:
                    return aged, since, base, marked, read
            elif at < anchor:
                return None
            else:
                anchor = at
        else:
            anchor = at
        self.groups[tokens] = [anchor, left, now, issued, seq, 0, marks, ticket.seq]
        return left, now, seq, marks, ticket.seq

    def forget(self) -> None:
        """Caps and levels were set otherwise (spent, a new shape): no group is open."""
        self.groups.clear()
