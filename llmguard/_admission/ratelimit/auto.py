"""One quota under ``refill="auto"``: a sliding log, a bucket and (once learned) a fixed count,
kept together; the shape learned from the server (:mod:`.shape`) says which one admits.

The log is safe against every shape (a fixed or sliding window, or a token bucket, which
admits anything a log does), so it paces until the shape is known. All three see every
admission, reconciliation and refund from the start, so switching shape mid-run needs no
reconstruction (a fixed count is rebuilt from the log, which holds the current window).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .bucket import Bucket
from . import arrived, holds
from .carry import Carry, fold
from .fixed import FixedCount
from .log import FOLD_AT, Entry, Log

__all__ = ["AutoTrack"]


class AutoTrack:
    """A quota whose shape is learned; same surface as a :class:`.log.Log` track."""

    __slots__ = ("quota", "shape", "log", "bucket", "fixed", "window", "recent", "carry", "ceiling",
                 "peer", "repeats", "reading")
    #: The bucket kept alongside the log (an output quota's: :class:`.output.OutputTrack`).
    bucket_type: type[Bucket] = Bucket

    def __init__(self, quota: Any, shape: Any, share: AutoTrack | None = None) -> None:
        self.quota = quota
        self.shape = shape
        #: ``share``: the track of the other unit over the same window (``rpm`` for ``tpm``),
        #: whose log and history this one reads (:class:`.log.Log`'s sharing; :mod:`.pair`).
        self.log = Log(quota, None if share is None else share.log)
        self.bucket = self.bucket_type(quota)
        self.fixed: FixedCount | None = None
        #: The server's window this quota describes (its window without the margin).
        self.window = quota.window - quota.margin
        #: Ours admitted within two windows (unfolded, unlike the log's): a fixed window
        #: learned from a server that counts late counts ours in flight at its boundaries.
        self.recent: deque[Entry] = deque() if share is None else share.recent
        #: The track sharing this one's log and history, or None.
        self.peer: AutoTrack | None = None
        if share is not None:
            self.peer, share.peer = share, self
        #: Ours that left ``recent``, as a bucket of the quota holds them (:mod:`.carry`).
        self.carry: Carry | None = None
        #: The most a bucket of this quota charges over our estimates (:mod:`.refuted`).
        self.ceiling = float("inf")
        #: Lessons one 429 suggested, not yet confirmed by a repeat (:mod:`.repeat`).
        self.repeats: dict[str, Any] = {}
        #: The server's latest reading of this quota in a learned window: ``(its end, seq
        #: of ours it counted, remaining, when that one was admitted)`` (:func:`.repeat.read`).
        self.reading: tuple[float, int, int, float] | None = None

    @property
    def limit(self) -> int:
        return self.log.limit

    def learns(self) -> bool:
        """True when the learned shape describes this quota (per minute: an rps or a burst
        share stays a sliding log)."""
        return abs(self.window - self.shape.window) < 1e-9

    def _pacer(self) -> Any:
        kind = self.shape.pacing
        if kind == "bucket" and self.learns():
            return self.bucket
        if kind == "fixed" and self.fixed is not None:
            return self.fixed
        return self.log

    def weight(self, entry: Entry) -> int:
        return entry.tokens if self.quota.tokens else entry.live

    def _both(self) -> bool:
        """True while a server that says nothing served a probe beyond the log (:mod:`.silent`):
        paced within a bucket and a fixed count alike, until it says which it is."""
        return self.shape.served and self.fixed is not None and self.shape.kind == "unknown"

    def most(self, now: float) -> float:
        """The most a token bucket of this quota can hold for one of ours arriving within the
        margin from now (:func:`.holds.most`; what it surely holds: :func:`.holds.surely`)."""
        return holds.most(self, now)

    def slack(self) -> float:
        """What a bucket refills while ours are on the way, each end (:meth:`most`)."""
        return 2 * self.quota.margin * self.limit / self.window

    def fits(self, now: float, tokens: int) -> bool:
        shape = self.shape
        kind = shape.kind
        if kind != "bucket" and kind != "fixed":  # as ``wait``, without ``_pacer`` if it can
            if shape.served and self._both():  # what a bucket surely holds, and the minute
                need = tokens if self.quota.tokens else 1  # (``fits`` is given the tokens)
                return holds.surely(self, now) >= need and self.fixed.fits(now, tokens)
            if not shape.assumed:  # the log paces an unknown shape (a bucket if assumed)
                # ``self.log.fits(now, tokens)``, written out: twice on every admission
                log = self.log
                entries = log.entries
                if entries and entries[0].time <= now - log.span:
                    log.expire(now)
                return log.used + (tokens if log.tokens else 1) <= log.limit
        return self._pacer().fits(now, tokens)

    def wait(self, now: float, need: int) -> float:
        if self.shape.served and self._both():
            short = need - holds.surely(self, now)
            return max(short * self.window / self.limit, self.fixed.wait(now, need), 0.0)
        return self._pacer().wait(now, need)

    def add(self, now: float, entry: Entry) -> None:
        """Count ``entry`` admitted at ``now`` (sharing a log: the leading track's first)."""
        log = self.log
        entries = log.entries
        if entries and entries[0].time <= now - log.span:
            log.expire(now)  # the log may not be asked (another pacer admits): keep it short
        # ``log.add``, written out (every admission, once per quota), and ``bucket.add``
        units = entry.tokens if log.tokens else 1
        log.used += units
        if log.lead:  # else the leading track appended it to the shared log and history
            entries.append(entry)
            if len(entries) > FOLD_AT and now // log.slot > log.cut:
                log.fold()
            recent = self.recent
            recent.append(entry)
            horizon = now - 2.0 * self.window  # (a float: no int operand to convert)
            while recent[0].time < horizon:  # older than two windows: the carry's
                old = recent.popleft()
                fold(self, old)
                if self.peer is not None:
                    fold(self.peer, old)
        self.bucket.take(now, units)  # (``entry.live`` is 1 on admission: the log's count)
        if self.fixed is not None:
            self.fixed.add(now, entry)

    def adjust(self, now: float, entry: Entry, tokens: int, live: int) -> None:
        log = self.log
        if entry.time // log.slot < log.cut or entry.time <= now - log.span:
            log.adjust(now, entry, tokens, live)  # folded, or left the window
        else:  # ``log.adjust``, written out for an entry still in the window (every settled call)
            entries = log.entries
            if entries and entries[0].time <= now - log.span:
                log.expire(now)  # first, so an expiring entry leaves with the weight it counted
            log.used += (tokens - entry.tokens) if log.tokens else (live - entry.live)
        if log.tokens:  # ``self.bucket.adjust(now, entry, tokens, live)``
            self.bucket.settled(now, entry, entry.tokens, tokens if live else None)
        else:
            self.bucket.settled(now, entry, entry.live, 1 if live else None)
        if self.fixed is not None:
            self.fixed.adjust(entry, tokens, live)

    def rescale(self, now: float, entry: Entry, tokens: int) -> None:
        """``entry``, not settled, counts ``tokens`` from now on (less than it took)."""
        self.log.adjust(now, entry, tokens, entry.live)
        self.bucket.rescale(now, entry, tokens)
        if self.fixed is not None:
            self.fixed.adjust(entry, tokens, entry.live)

    def recount(self, now: float, entry: Entry, tokens: int) -> None:
        """``entry`` counts ``tokens`` from now on, settled or not (what the server is
        believed to have charged it changed: :mod:`.charge`)."""
        self.log.adjust(now, entry, tokens, entry.live)
        if entry.owner is not None:  # not settled: what is outstanding changes with it
            self.bucket.rescale(now, entry, tokens)
        elif tokens > entry.tokens:  # settled: the bucket only loses what it gave back
            self.bucket.drain_to(now, self.bucket.available(now) - (tokens - entry.tokens))
        if self.fixed is not None:
            self.fixed.adjust(entry, tokens, entry.live)

    def idle(self, now: float) -> bool:
        return (self.log.idle(now) and self.bucket.idle(now)
                and (self.fixed is None or self.fixed.idle(now)))

    def available(self, now: float) -> int:
        if self.shape.served and self._both():
            return min(int(holds.surely(self, now)), self.fixed.available(now))
        return self._pacer().available(now)

    def used(self, now: float, before: Entry | None = None) -> int:
        """Units the server has seen from us in its window now, as believed, bar ``before``."""
        pacer = self._pacer()
        if pacer is self.bucket:
            used = self.limit - max(0, self.bucket.available(now))
        elif pacer is self.fixed:
            used = self.limit - self.fixed.available(now)
        else:
            self.log.expire(now)
            used = self.log.used
        if before is not None and before.time > now - self.log.span:
            used -= self.weight(before)
        return used

    def retime(self, now: float, quota: Any) -> None:
        """The same quota with another margin (:mod:`.latency`): every pacer uses it from now
        on (a fixed count recounted: which windows an admission counts in depends on it)."""
        self.quota = quota
        self.log.retime(quota)
        self.bucket.retime(now, quota)
        if self.fixed is not None:
            self.fixed.margin = quota.margin
            self.log.expire(now)
            self._recount(now)

    def set_limit(self, now: float, limit: int) -> None:
        """The server admits only ``limit`` per window (learned): every pacer uses that."""
        self.log.limit = limit
        self.bucket.set_limit(now, limit)
        if self.fixed is not None:
            self.fixed.limit = limit

    def become_fixed(self, now: float, epoch: float) -> None:
        """Count per fixed window from now on, boundaries at ``epoch + i * window``."""
        self.log.expire(now)
        late = self.shape.late  # the wall clock's minute: exact boundaries, counted late
        settles = self.shape.kind == "fixed" and bool(self.shape.quiet)  # (:mod:`.crossed`)
        self.fixed = FixedCount(self.limit, self.window, self.quota.margin, epoch,
                                self.quota.tokens, self.recent if late else None, late,
                                self.shape.doubt, settles)
        self._recount(now)

    def narrowed(self, now: float, epoch: float, doubt: float) -> None:
        """The learned fixed window's boundary is at ``epoch`` (the server's up to ``doubt`` s
        later) from now on (:func:`.learn._narrowed`): recounted, as :meth:`retime` does."""
        self.fixed.epoch, self.fixed.doubt = epoch, doubt
        self.log.expire(now)
        self._recount(now)

    def _recount(self, now: float) -> None:
        """The fixed count rebuilt from the log: ours carried into its window answered already,
        their answers' readings dated their takes (a server that speaks), as they did
        (:func:`.arrived.answered`). Recounted without, 3 answered after a queueing proxy's
        first answer of the minute, learned at :74, filled it: 2 s late (1.01x from :56)."""
        self.fixed.rebuild(now, self.log.entries)
        if self.shape.quiet is False:
            arrived.answered(self.fixed, now)

    def __repr__(self) -> str:
        return f"<AutoTrack {self._pacer()!r}>"
