"""Quota accounting: the pure arithmetic behind ``RateLimit``'s in-memory backend.

A :class:`Window` holds one partition's admissions against its quotas, each paced by a track:
a sliding log (:mod:`.log`, ``refill="window"``), a bucket (:mod:`.bucket`, ``"continuous"``),
or (``"auto"``, the default) both and a fixed count, the shape learned (:mod:`.shape`).
On top: a 429's pause, the caps headers report. Takes ``now`` as an argument: tested directly."""

from __future__ import annotations

from typing import Any

from . import answers, arrived, beyond, changed, deferred, learn, learn_refusal, short, silent, told
from .auto import AutoTrack
from .bucket import Bucket
from .charge import Charge
from .log import Entry, Folded
from .pair import pairs, tracks
from .queued import Queued, left
from .quota import Quota
from .reading import Readings
from .shape import Shape

__all__ = ["SLACK", "Entry", "Quota", "Window"]

#: Added to every computed wait: float rounding never admits on the instant an entry expires.
SLACK = 1e-3


class Window:
    """Admissions of one partition against several quotas, plus a pause and provider caps."""

    __slots__ = ("tracks", "pace", "paused_until", "caps", "buckets", "shape", "issued",
                 "issued_tokens", "readings", "charge", "quotas", "log", "queued", "scans")

    def __init__(self, quotas: tuple[Quota, ...], charge: type[Charge] = Charge) -> None:
        self.quotas = quotas  # as given (a new margin is a new tuple: ``latency.retime``)
        learned = [q for q in quotas if q.learn]
        #: What this partition learned about the server's limiter (None: nothing to learn).
        self.shape = Shape.of(learned) if learned else None
        self.tracks: tuple[Any, ...] = tracks(quotas, self.shape)
        self.pace = pairs(self.tracks)  # as the per-call loops take them (:mod:`.pair`)
        #: The first quota's sliding log when its shape is learned (each ``first`` read there).
        self.log = self.tracks[0].log if isinstance(self.tracks[0], AutoTrack) else None
        #: True when an entry must be settled exactly once (buckets keep what is outstanding).
        self.buckets = any(q.continuous or q.learn for q in quotas)
        #: Loop time before which nothing is admitted (a provider's Retry-After).
        self.paused_until = 0.0
        #: [remaining, until, first seq counted, the reading's ticket (the server counted it as
        #: it charges: a reconciliation changes nothing), the marks of ours queued below it
        #: counted (:mod:`.queued`), the room it gives back before ``until``, if any
        #: (:class:`.answers.Stairs`)] per unit (False requests, True tokens).
        self.caps: dict[bool, list[Any]] = {}
        #: Requests and tokens admitted so far (an entry's ``seq``/``tseq`` are these before it).
        self.issued = self.issued_tokens = 0
        #: What header readings leave us, read against ours in flight (:mod:`.reading`).
        self.readings = Readings(max(q.margin for q in quotas))
        #: What the server charges against our estimate, for learned token quotas (``charge``).
        charged = [q.limit for q in learned if q.tokens and not q.part]
        self.charge = charge(min(charged)) if charged else None
        #: Ours admitted whose calls wait in an inner queue now (not at the server).
        self.queued = Queued()
        #: The probing's scans of ours, kept while what they read stands (:mod:`.changed`).
        self.scans: dict[str, tuple[Any, ...]] = {}

    def wait(self, now: float, tokens: int) -> float:
        """Seconds until one request of ``tokens`` may be admitted (0.0: now), ``SLACK`` added
        when positive (a pause ending a float sliver past a loop tick asks for 1e-16 s forever)."""
        wait = self.paused_until - now
        estimate, tokens = tokens, tokens if self.charge is None else self.charge.units(tokens)
        for track in self.tracks:
            wait = max(wait, track.wait(now, tokens if track.quota.tokens else 1))
        for unit, cap in self.caps.items():
            need = tokens if unit else 1
            if cap[1] > now and cap[0] < need:
                wait = max(wait, answers.sooner(cap, now, need) - now)
        wait = beyond.sooner(self, now, wait, tokens, estimate)  # a probe may go sooner
        return wait + SLACK if wait > 0.0 else 0.0

    def take(self, now: float, tokens: int) -> Entry | None:
        """Admit one request of ``tokens`` now if every quota has room (``wait(now, tokens) ==
        0.0``, in one pass): its entry, else None, nothing recorded (written out: every call)."""
        charge = self.charge  # (``charge.units``: nothing to scale at a factor of 1)
        estimate, tokens = tokens, tokens if charge is None or charge.factor == 1.0 \
            else charge.units(tokens)
        if self.paused_until > now:
            return beyond.probe(self, now, tokens, estimate)
        for track in self.pace:
            if not track.fits(now, tokens):
                return beyond.probe(self, now, tokens, estimate)
        caps = self.caps
        if caps:
            for unit, cap in caps.items():
                need = tokens if unit else 1
                if cap[1] > now and cap[0] < need and answers.room(cap, now) < need:
                    return beyond.probe(self, now, tokens, estimate)
        return self.add(now, tokens, estimate)

    def add(self, now: float, tokens: int, estimate: int | None = None) -> Entry:
        """Record an admission at ``now`` of ``tokens`` as the server counts them (after ``wait``
        returned 0; beyond it: a probe, :mod:`.silent`), for a call estimated at ``estimate``
        (default: ``tokens`` is the estimate, scaled here to what the server counts)."""
        if estimate is None and self.charge is not None:
            estimate, tokens = tokens, self.charge.units(tokens)
        shape = self.shape
        probe = shape is not None and shape.quiet and silent.beyond(self, now, tokens)
        entry = Entry(now, tokens, self if self.buckets else None, self.issued,
                      self.issued_tokens, estimate)
        self.issued += 1
        self.issued_tokens += tokens
        recent, horizon = self.readings.recent, now - self.readings.spread  # ``readings.admit``
        while recent and recent[0].time < horizon:  # written out (every admission)
            recent.popleft()
        recent.append(entry)
        if recent[0] is not entry:  # else ``near`` is its own, as made
            entry.near = (recent[0].seq, recent[0].tseq)
        for track in self.pace:
            track.add(now, entry)
        for unit, cap in self.caps.items() if self.caps else ():  # (no view made when empty)
            cap[0] -= tokens if unit else 1
        if shape is not None:
            shape.probe = entry if probe else shape.probe
            if self.log is not None and self.log.entries:  # ``log.oldest()``, written out
                oldest = self.log.entries[0]
                entry.first = oldest.first if type(oldest) is Folded else oldest.time
            if shape.candidate is not None and shape.since is None \
                    and now >= shape.candidate + shape.skew():
                shape.since = (entry.seq, entry.tseq)  # the first of ours in the supposed window
        return entry

    def idle(self, now: float) -> bool:
        """True when nothing is in any window, no pause or cap applies (a fresh window's)."""
        return all(track.idle(now) for track in self.tracks) and self.paused_until <= now \
            and all(cap[1] <= now for cap in self.caps.values())

    def adjust(self, now: float, entry: Entry, tokens: int, live: int = 1,
               answered: bool = True) -> None:
        """Change an entry to ``tokens`` (reconcile) or remove it (``live=0``, refund: all it took
        back, caps too). With buckets this settles it (call it for every entry): a second call, or
        one for another window's entry, changes nothing. A learned token quota keeps what the
        server counts (:mod:`.charge`; ``answered``: the call was answered, not merely sent)."""
        if self.buckets:
            if entry.owner is not self:
                return
            entry.owner = None
        if entry.live and not live:
            if self.readings.groups:  # (no reading open: nothing to give back)
                self.readings.refund(entry, self.tracks if self.shape and self.shape.kind == "bucket" else ())
        elif live and self.charge is not None:  # what the server counts of it
            tokens = self.charge.settled(entry, tokens, answered, self.shape.kind == "bucket")
        for track in self.pace:
            track.adjust(now, entry, tokens, live)
        for unit, cap in self.caps.items() if self.caps else ():
            if entry.seq >= cap[2] and entry.seq != cap[3]:  # counted against it: the change
                cap[0] -= (tokens - entry.tokens) if unit else (live - entry.live)
        if (answered or not live) and entry.answered > now:
            entry.answered = now  # the call ended: no longer in flight (:mod:`.fixed`)
            changed.answered += 1
            if deferred.waiting:  # a 429 in its burst waits for it
                deferred.answered(self, now, entry, live)
        if self.shape is not None and entry is self.shape.probe:
            tokens = learn.settled(self, now, entry, tokens, live)
        if entry.queued:  # it left the inner queue (moved: counted anew; or never sent)
            left(self, entry, tokens, live)
        if live != entry.live:
            changed.counted += 1
        entry.tokens, entry.live = tokens, live

    def cap(self, now: float, tokens: bool, remaining: int, reset: float | None,
            ticket: Entry | None = None, limit: int | None = None, wall: float = 0.0,
            as_of_now: bool = False) -> None:
        """The provider says only ``remaining`` are left (until ``reset`` s; of ``limit``) as
        it counted ``ticket``'s request (None, or ``as_of_now``: all of ours sent), read against
        ours in flight per burst (:mod:`.reading`): a bucket's level, else a cap until the reset
        (a fixed window's boundary; one ours explain: :func:`.answers.held`; ``as_of_now``, ours
        sent just before aside: :meth:`.reading.Readings.unseen`). A shape learns."""
        if ticket is not None:  # its answer dates it: which windows counted it
            arrived.dated(self.tracks, ticket, now)
        seen = own = ticket  # the last of ours it counted: as of now, the last sent
        if as_of_now and ticket is not None:
            seen, ticket = self.readings.recent[-1], None
        at = now if ticket is None else ticket.time
        tracks = [t for t in self.tracks if t.quota.tokens is tokens]
        if self.shape is not None:
            learners = [t for t in tracks if isinstance(t, AutoTrack) and t.learns()]
            if learners:
                learn.observe(self, now, learners, tokens, remaining, reset, seen, limit, wall,
                              at)
        if ticket is not None:  # taken before the boundary it was carried over
            arrived.taken(self.tracks, ticket, now)
        if tokens and ticket is not None and self.charge is not None and tracks:
            self.charge.read(self, now, remaining, ticket, tracks)  # ours read at what it says
        issued = self.issued_tokens if tokens else self.issued
        track = self.tracks[0]
        after, marks = self.readings.after(track.log if isinstance(track, AutoTrack) else track,
                                           tokens, ticket, issued, self.queued)
        read = self.readings.read(now, tokens, remaining, ticket, after, issued, marks)
        kind = self.shape.kind if self.shape is not None else None
        if read is None:
            return  # an older burst's reading: the open group's are newer
        # (the bound's own ticket: this reading's, or the older one of its group whose bound
        # holds; which ours it subtracted, whose recount or settling changes the cap)
        left, since, base, marks, seq = read if ticket is not None else (
            *read[:2], self.issued, read[3], -1)  # by seq
        pacers = short.buckets(self, tracks)  # each a bucket (a shorter window's: its own)
        if pacers:
            for track in pacers:  # drained, a give-back bounded too (:func:`.told.drain`)
                told.drain(track, now, left, since, ticket, base, self.readings.spread,
                           limit if kind == "bucket" else None,
                           self.queued.units(tokens) if marks else 0)
            return
        left -= self.readings.unseen(now, tokens, own) if as_of_now else 0  # (a level drains)
        stairs = None
        if kind == "fixed" and self.shape is not None and self.shape.epoch is not None:
            if self.shape.by_answer:  # it counts answers, not admissions: what admits is ours
                return
            until = self.shape.next_boundary(self.shape.epoch, at)
            left = arrived.vouched(tracks, now, at, left, limit)  # its count bounds ours
        elif reset is not None:  # from when the server counted the request
            until = (at if ticket is not None else now) + reset
        elif self.shape is not None:  # no reset: the safe reading, left for one window
            until = at + max(t.quota.window for t in tracks) if tracks else now
            until, stairs = answers.held(self, tracks, remaining, limit, seen, now, until)
        else:
            return
        if until > now:
            self.caps[tokens] = [left, until, base, seq, marks]
            if stairs is not None:  # room back as ours leave the server's count (:mod:`.answers`)
                self.caps[tokens].append(stairs)

    def spent(self, now: float) -> None:
        """Every quota used up now: buckets empty, windows capped at nothing for a window."""
        self.readings.forget()
        for track in self.tracks:
            bucket = track if isinstance(track, Bucket) else getattr(track, "bucket", None)
            if bucket is not None:
                bucket.drain_to(now, 0)
            if not isinstance(track, Bucket):
                self.caps[track.quota.tokens] = [0, now + track.quota.window, self.issued, -1, 0]

    def refused(self, now: float, ticket: Entry | None, seconds: float, wall: float = 0.0,
                named: Any = None) -> None:
        """A 429 asked for ``seconds`` of pause after the request of ``ticket`` (and what it
        teaches a shape to learn, of the quota it ``named``: :func:`.learn_refusal.refused`)."""
        until = now + seconds if self.shape is None else \
            learn_refusal.refused(self, now, ticket, seconds, wall, named)
        if ticket is not None:  # refused by then: counted (if at all) in no window after
            arrived.dated(self.tracks, ticket, now)
        self.paused_until = max(self.paused_until, until)

    def limit(self, tokens: bool) -> int | None:
        """The tightest limit in requests or tokens now (a learned one, else the quota's)."""
        return min((track.limit for track in self.tracks if track.quota.tokens is tokens), default=None)

    def available(self, now: float, tokens: bool) -> int:
        """Headroom now in requests or tokens (the tightest quota or cap), for gauges."""
        free = [track.available(now) for track in self.tracks if track.quota.tokens is tokens]
        cap = self.caps.get(tokens)
        if cap is not None and cap[1] > now:
            free.append(int(answers.room(cap, now)))
        return max(0, min(free)) if free else 0
