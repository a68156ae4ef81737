"""The sliding-window log: at most ``limit`` units in any ``window`` seconds, exactly.

Why a log by default and not a token bucket (aiolimiter) or GCRA: a log never admits more than
the quota in any window, whatever the server's shape (a fixed clock window, a sliding window,
or a token bucket, which admits anything a log admits), and it can use all of it. It also
supports what aiolimiter cannot: reconciling an entry to the actual usage and refunding it.

Bounded whatever the quota: once a log holds more than ``FOLD_AT`` entries, the entries older
than the current slot (``1/SLOTS`` of the window: a second of a minute) are folded into one
:class:`Folded` entry per slot, which leaves the window when its newest admission does. The
quota still holds exactly (a folded admission counts for at most one slot longer than it
needs to, never shorter), so the log is conservative by at most a slot, and its size is
``FOLD_AT`` plus one slot's admissions plus ``SLOTS`` folded entries. A folded admission can
still be reconciled or refunded (found by its slot); one refused by the server after it was
folded counts as admitted (the safe side for a probe).

Shared: a request quota and a token quota over the same window (``rpm`` and ``tpm``) see the
same admissions leave at the same instants, so the second one's log (``Log(quota, share=
first)``) keeps no deque of its own: both read one (an entry carries the count and the tokens,
a folded one both sums), the first appends and folds, and whichever expires counts the leaving
entries off both totals. One entry slot a call instead of two, and the second quota's
admission appends, pops and folds nothing (:mod:`.pair`).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["FOLD_AT", "SLOTS", "Entry", "Folded", "Log"]


#: The least wait reported when something has no room: strictly positive, so a caller that
#: sleeps it lets the clock move (a wait of 0.0 with no room is a busy loop).
MIN_WAIT = 5e-324

#: Entries a log keeps one by one before folding the older ones into per-slot counts.
FOLD_AT = 4096

#: Folded slots per window: the resolution a folded admission is counted at (window / SLOTS).
SLOTS = 60

class Entry:
    """One admission: when, how many tokens, whether it still counts as a request (``live``),
    the window that has yet to settle it (None once settled), and its place among the
    admissions of its window (``seq`` requests and ``tseq`` tokens issued before it), which
    says how many of ours a provider's header had not seen yet; ``refused`` once the server
    answered it with a 429 (it reached the server, which admitted none of it); ``first``, when
    the oldest admission still in the window at its own admission was made (for a shape to be
    read from its answer's headers, which come after that one may have left the log); ``near``,
    the ``(seq, tseq)`` of the first admission made within a moment before it (ours that may
    reach the server in either order with it: :mod:`.reading`); ``estimate``, the tokens the
    call was estimated at (``tokens`` is what the server is believed to count: :mod:`.charge`);
    ``answered``, when its call ended (answered, failed or refunded; ``inf`` while in flight:
    :mod:`.fixed` counts one in flight at a boundary in the next window too); ``queued``, while
    its call waits in an inner queue (ConcurrencyLimit's: not at the server), the mark its
    window numbered it with (0 otherwise: :meth:`.window.Window.queue`); ``way``, once its
    answer's headers timed it, the most seconds it took to reach the server (unset until then:
    :mod:`.latency`)."""

    __slots__ = ("time", "tokens", "live", "owner", "seq", "tseq", "refused", "first", "near",
                 "estimate", "answered", "used", "queued", "way")

    def __init__(self, time: float, tokens: int, owner: Any = None, seq: int = 0,
                 tseq: int = 0, estimate: int | None = None) -> None:
        self.time = time
        self.tokens = tokens
        self.estimate = tokens if estimate is None else estimate
        self.live = 1  # 0 once refunded
        self.owner = owner
        self.seq = seq
        self.tseq = tseq
        self.refused = False
        self.first = time
        self.near = (seq, tseq)
        self.answered = math.inf
        self.used: int | None = None  # the usage its answer reported (:mod:`.probing`)
        self.queued = 0


class Folded(Entry):
    """The admissions of one slot, folded: ``tokens`` and ``live`` are their sums, ``first``
    the oldest one's time and ``time`` the newest one's (so it leaves the window with it)."""

    __slots__ = ()

    def __init__(self, first: Entry) -> None:
        super().__init__(first.time, 0)
        self.live = 0


class Log:
    """One quota's sliding log: the entries inside its window and their running total.
    ``limit`` starts as the quota's and may be lowered to a limit learned from the server."""

    __slots__ = ("quota", "limit", "span", "tokens", "entries", "used", "slot", "cut", "folded",
                 "peer", "lead")

    def __init__(self, quota: Any, share: Log | None = None) -> None:
        self.quota = quota
        # the quota's fields, read on every admission
        self.limit, self.span, self.tokens = quota.limit, quota.window, quota.tokens
        self.entries: deque[Entry] = deque()
        self.used = 0
        #: Seconds per folded slot; an entry at ``t`` is in slot ``t // slot``.
        self.slot = self.span / SLOTS
        #: Entries in a slot below ``cut`` are folded (none yet).
        self.cut = -math.inf
        #: The folded entry of each slot below ``cut`` (those that left the window included
        #: until the next fold prunes them: ``time`` tells).
        self.folded: dict[float, Folded] = {}
        #: The log sharing this one's entries (same window, the other unit), or None; ``lead``:
        #: this one appends and folds them (the other only counts).
        self.peer: Log | None = None
        self.lead = True
        if share is not None:
            if share.tokens is self.tokens or share.span != self.span or share.peer is not None:
                raise ValueError("a log shares the entries of one log of the other unit and "
                                 "the same window")
            self.entries, self.folded, self.cut = share.entries, share.folded, share.cut
            self.used = sum(self.weight(entry) for entry in self.entries)
            self.peer, share.peer, self.lead = share, self, False

    def weight(self, entry: Entry) -> int:
        return entry.tokens if self.tokens else entry.live

    def retime(self, quota: Any) -> None:
        """The same quota with another margin (:mod:`.latency`): its window from now on."""
        self.quota, self.span = quota, quota.window

    def expire(self, now: float) -> None:
        horizon = now - self.span
        entries = self.entries
        peer = self.peer
        while entries and entries[0].time <= horizon:
            entry = entries.popleft()
            self.used -= entry.tokens if self.tokens else entry.live
            if peer is not None:  # (its entries too: counted off both totals)
                peer.used -= entry.tokens if peer.tokens else entry.live

    def fits(self, now: float, tokens: int) -> bool:
        """True when one request of ``tokens`` fits now."""
        entries = self.entries
        if entries and entries[0].time <= now - self.span:
            self.expire(now)
        return self.used + (tokens if self.tokens else 1) <= self.limit

    def wait(self, now: float, need: int) -> float:
        """Seconds until ``need`` more fits (0.0 if it fits now)."""
        self.expire(now)
        excess = self.used + need - self.limit
        if excess <= 0:
            return 0.0
        for entry in self.entries:  # oldest first: the window frees them in this order
            excess -= self.weight(entry)
            if excess <= 0:
                # ``fits`` expires an entry once ``time <= now - span``; ``time + span - now``
                # can round to 0.0 a tick before that holds (98.106431 + 60 - 158.106431), and
                # a zero wait with no room re-checks at the same instant for ever: never below
                # the smallest positive wait (Window.wait adds SLACK on top).
                return max(entry.time + self.span - now, MIN_WAIT)
        return self.span  # over-charged by reconciliation beyond the quota: a full window

    def add(self, now: float, entry: Entry) -> None:
        """Count ``entry`` admitted at ``now`` (a sharing log: after the one that leads)."""
        self.used += entry.tokens if self.tokens else 1
        if not self.lead:  # the leading log appended it already
            return
        entries = self.entries
        entries.append(entry)
        if len(entries) > FOLD_AT and now // self.slot > self.cut:
            self.fold()

    def fold(self) -> None:
        """Fold every entry in a slot before the newest entry's into its slot's entry."""
        entries, slot, folded = self.entries, self.slot, self.folded
        cut = entries[-1].time // slot
        horizon = entries[-1].time - self.span
        for key in [key for key, head in folded.items() if head.time <= horizon]:
            del folded[key]  # left the window: an adjust of one of its entries changes nothing
        heads = []
        while type(entries[0]) is Folded:
            heads.append(entries.popleft())
        while entries[0].time // slot < cut:
            entry = entries.popleft()
            key = entry.time // slot
            head = folded.get(key)
            if head is None:
                head = folded[key] = Folded(entry)
                heads.append(head)
            head.time = entry.time
            head.tokens += entry.tokens
            head.live += entry.live
        entries.extendleft(reversed(heads))
        self.cut = cut
        if self.peer is not None:
            self.peer.cut = cut

    def oldest(self) -> float:
        """When the oldest admission still counted was made (the log must not be empty)."""
        return self.entries[0].first if type(self.entries[0]) is Folded else self.entries[0].time

    def adjust(self, now: float, entry: Entry, tokens: int, live: int) -> None:
        horizon = now - self.span
        entries = self.entries
        if entries and entries[0].time <= horizon:
            self.expire(now)  # first, so an expiring entry leaves with the weight it counted
        if entry.time // self.slot < self.cut:  # folded: counted while its slot's entry is
            head = self.folded.get(entry.time // self.slot)
            if head is None or head.time <= horizon:
                return
            # a shared head: each log changes its own unit's sum (the other log, the other)
            if self.peer is None or self.tokens:
                head.tokens += tokens - entry.tokens
            if self.peer is None or not self.tokens:
                head.live += live - entry.live
        elif entry.time <= horizon:  # left this window
            return
        self.used += (tokens - entry.tokens) if self.tokens else (live - entry.live)

    def admitted(self, now: float) -> int:
        """Units in the window the server admitted (refused ones left out)."""
        self.expire(now)
        return self.used - sum(self.weight(e) for e in self.entries if e.refused)

    def idle(self, now: float) -> bool:
        self.expire(now)
        return not self.entries

    def available(self, now: float) -> int:
        entries = self.entries
        if entries and entries[0].time <= now - self.span:  # (as ``fits``: the gateway's
            self.expire(now)                                 # answer headers read it)
        return self.limit - self.used

    def __repr__(self) -> str:
        return f"<Log {self.used}/{self.limit} per {self.span:g} s>"
