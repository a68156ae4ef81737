"""Which limiter the server runs, learned from what it says (``RateLimit(refill="auto")``).

A server's limiter is one of three shapes (README, "Pacing"): a **token bucket** refilling
continuously (OpenAI, Anthropic), a **fixed window** counted per clock minute (LiteLLM's proxy,
many gateways), or a **sliding window**. Until the shape is known the quota is paced as a
sliding log, which never exceeds any of them (input/output token quotas alone: as the buckets
Anthropic and Vertex AI document, ``assumed``, until a 429 asks for longer than a bucket's
refill). The shape is then read from:

* ``x-ratelimit-reset-*`` (or Anthropic's ``anthropic-ratelimit-*-reset`` moments, read as of
  the answer) against ``-remaining-*``: a bucket's reset is the time to refill what
  is missing, ``(limit - remaining) * window / limit`` (:func:`read_reset`); a fixed window's
  points to its next boundary, earlier than our oldest request leaves a sliding window; a
  sliding window's (or one that starts at its first request) points one window after our oldest.
* a server that gives no reset (LiteLLM's proxy sends ``remaining`` alone and a 429 with a constant
  ``retry-after: 60``): counters keyed by the clock minute are the common case, so the wall-clock
  minute is the candidate boundary, confirmed or refuted by the first answer sent after it: a fixed
  window starts afresh there (``remaining`` back near the limit), a bucket or a sliding window does
  not. Answers that straddle the boundary show it sooner (:meth:`Shape.jumped`): ``remaining`` back
  up from the lowest read about it (a loaded proxy answers in waves out of order, some written
  after the minute) and before it, faster than a bucket refills and above what a sliding window
  still counting ours answered could report. When the head of the line would wait past that
  boundary, one request is sent there as a probe if the quota as the server counts it (429s left
  out) has room; a refused probe costs one 429, once per key. A server that queues (LiteLLM's proxy
  under a burst) answers late, its ``remaining`` may count answers rather than admissions (ours
  that crossed the boundary allowed for: :func:`.learn._fresh`; a reading that fits a sliding
  window as well defers to the next boundary: :meth:`Shape.defer`), and it counts a request when it
  takes it from its queue: a clock minute learned so (``late``) counts ours in flight at a boundary
  in the new minute too, unless answered before one made in it (:mod:`.fixed`).

The kind and the reason are in ``statistics()`` and the ``repr`` of the layer. Everything here
takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from .fixed import skew

__all__ = ["Shape", "read_reset"]

#: Seconds of disagreement tolerated between a header's reset and a shape's prediction
#: (headers round to the second, and a request reaches the server a little after admission).
TOLERANCE = 1.5


def read_reset(limit: int, remaining: int, reset: float, window: float, at: float,
               oldest: float | None, tolerance: float = TOLERANCE) -> tuple[str, float | None, str] | None:
    """The shape one ``(remaining, reset)`` reading shows, for a request admitted at ``at``
    while our oldest request still in the window was admitted at ``oldest``:
    ``("bucket" | "fixed" | "sliding", boundary or None, why)``, or None when it fits every
    shape within ``tolerance`` s (a bucket almost full reports what any window would)."""
    per_unit = window / limit
    refill = (limit - remaining) * per_unit  # a bucket's time to full
    boundary = at + reset
    if abs(reset - refill) <= per_unit + tolerance:
        if refill < per_unit + 2 * tolerance:
            return None
        return ("bucket", None, f"reset {reset:g} s is the time to refill {limit - remaining} "
                                f"of {limit}: a token bucket")
    if oldest is not None and boundary < oldest + window - tolerance:
        return ("fixed", boundary, f"reset {reset:g} s points to a boundary before our oldest "
                                   "request leaves the window: a fixed window")
    return ("sliding", None, f"reset {reset:g} s is when our oldest request leaves the window: "
                             "a sliding window (or one that starts at its first request)")


class Shape:
    """What one key has learned about the server's limiter: ``kind`` (``"unknown"``, ...) and
    ``why``; a fixed window's ``epoch`` (a boundary, loop time; the server's up to ``doubt`` s
    later: :func:`.fixed.skew`); a fixed-window hypothesis to confirm (``candidate``)."""

    __slots__ = ("kind", "why", "window", "margin", "epoch", "candidate", "since", "probe",
                 "probes", "votes", "limits", "vouched", "bucketless", "shorter", "short",
                 "by_answer", "late", "last", "rose", "assumed", "hold", "quiet", "served",
                 "offset", "others", "doubt")

    def __init__(self, window: float, margin: float, assumed: str = "") -> None:
        self.kind = "unknown"
        #: How an unknown shape is paced: "" a sliding window (safe with any), or "bucket"
        #: (input/output token quotas: as Anthropic and Vertex AI document them).
        self.assumed = assumed
        self.why = ("nothing heard from the server yet: paced as a token bucket, as Anthropic "
                    "and Vertex AI document input/output token limits" if assumed else
                    "nothing heard from the server yet: paced as a sliding window, safe with any")
        #: The server's window (seconds) the shape describes, and our margin.
        self.window, self.margin = window, margin
        self.epoch: float | None = None
        self.doubt: float | None = None
        #: A boundary (loop time) a fixed window would start afresh at, to be confirmed.
        self.candidate: float | None = None
        #: ``(seq, tseq)`` of our first admission at or after the candidate boundary.
        self.since: tuple[int, int] | None = None
        #: The probe sent and not answered yet; probes left (a refused one costs a 429: one a key).
        self.probe, self.probes = None, 1
        #: The server's own reset points to the candidate boundary: it has room there in
        #: either shape (a fixed window starts afresh; a sliding one drops its oldest unit).
        self.vouched = False
        #: Consecutive readings that showed a bucket (two decide); ``bucketless``: a reading no
        #: bucket gives was seen; ``shorter``: the last one showed a shorter window than ours
        #: (or one was learned), ``short`` what its readings showed (:class:`.short.Short`).
        self.votes, self.bucketless, self.shorter, self.short = 0, False, False, None
        #: What was learned about the effective limits (empty: the quotas as configured).
        self.limits = ""
        #: Confirmed fixed only with ours that crossed the boundary allowed for (sent before it,
        #: answered after: :func:`.learn._fresh`, :func:`.answers.restarted`): the server's
        #: ``remaining`` counts answers, not the admissions it limits, so it caps nothing.
        self.by_answer = False
        #: Learned as a clock minute the server never pointed to (no reset): when it counts
        #: a request is unknown, and one that queues counts it late (:mod:`.fixed`). Its
        #: boundaries are the wall clock's: exact but for the clocks' skew.
        self.late = False
        #: Per unit (False requests, True tokens): ``(loop time, remaining, lowest before)`` of
        #: the lowest reading about the candidate boundary, and of those before it (:meth:`heard`).
        self.last: dict[bool, tuple[float, int, int]] = {}
        #: When a reading after the candidate boundary first rose: the new window shown.
        self.rose: float | None = None
        #: Loop time before which no probe goes: the end of a 429's retry-after shorter than
        #: a window (the server's own reckoning of when it admits again, unlike LiteLLM's
        #: constant window, which only says "within a window": :func:`.learn_refusal.refused`).
        self.hold = 0.0
        #: True once the server answered without a rate-limit header and until a reading is
        #: heard: it may be probed (:mod:`.silent`); None: no answer read yet. ``served``:
        #: its first probe was served; ``offset``: wall clock less loop time (clock minutes).
        self.quiet: bool | None = None
        self.served, self.offset = False, 0.0
        #: The other processes' admissions (a shared backend's :class:`.others.Others`), read
        #: with ours: the server counts theirs too. None in memory (there are none).
        self.others: Any = None

    @classmethod
    def of(cls, quotas: list[Any]) -> Shape:
        """The shape to learn for ``quotas`` (``learn=True``): input/output token quotas alone
        (``split_backend.SplitBackend``'s part keys) start as documented, as buckets."""
        return cls(max(q.window - q.margin for q in quotas), quotas[0].margin,
                   "bucket" if all(q.part for q in quotas) else "")

    @property
    def pacing(self) -> str:
        """The kind that paces now: the one learned, else the one assumed (if any)."""
        return self.assumed if self.kind == "unknown" and self.assumed else self.kind

    def learn(self, kind: str, why: str, epoch: float | None = None,
              doubt: float | None = None) -> bool:
        """Adopt ``kind`` (and ``epoch``, ``doubt``); True when it changed (switch pacers)."""
        changed = kind != self.kind or (kind == "fixed" and epoch != self.epoch)
        self.kind, self.why = kind, why
        if kind == "fixed":
            self.epoch, self.doubt = epoch, doubt
        self.candidate, self.since, self.served = None, None, False
        return changed

    def speak(self, reading: bool = True) -> None:
        """The server said something: a reading ends the probing of a server that says
        nothing (:mod:`.silent`); a 429 not to a probe (``reading=False``) drops the
        hypothesis under test (the 429 supposes its own)."""
        if self.quiet and self.kind == "unknown":  # (None: nothing silent under way)
            self.candidate = self.since = self.probe = None
        self.served, self.quiet = False, False if reading else self.quiet

    def next_boundary(self, epoch: float, t: float) -> float:
        """The first boundary of windows at ``epoch + i * window`` after ``t``."""
        return epoch + (math.floor((t - epoch) / self.window) + 1) * self.window

    def on_phase(self, boundary: float) -> bool:
        """True when ``boundary`` is one of the learned fixed window's (within tolerance)."""
        if self.epoch is None:
            return False
        off = (boundary - self.epoch) % self.window
        return min(off, self.window - off) <= TOLERANCE

    def suppose(self, boundary: float, why: str, vouched: bool = False,
                doubt: float | None = None) -> None:
        """A fixed window may start afresh at ``boundary`` (up to ``doubt`` s later): confirm it
        with the first answer to a request sent after it (unless a hypothesis is pending or
        refuted). ``vouched``: the server's reset points there (room there, whatever its shape)."""
        if self.kind == "unknown" and self.candidate is None and self.probes:
            self.candidate, self.why, self.vouched, self.doubt = boundary, why, vouched, doubt
            self.last, self.rose = {}, None

    def heard(self, tokens: bool, remaining: int, now: float, limit: int) -> None:
        """A reading that did not jump: the lowest from a tenth of a window before the candidate
        boundary to a quarter after (:meth:`jumped`), and before it; a rise from that: ``rose``."""
        boundary = math.inf if self.candidate is None else self.candidate
        then, low, ahead = self.last.get(tokens, (now, remaining, limit))  # (none before: limit)
        if remaining - ahead > max(1, limit // 20) and self.rose is None and now >= boundary:
            self.rose = now
        if self.kind == "unknown" and now < boundary + self.window / 4:
            if then <= boundary - self.window / 10 or remaining < low:  # (a proxy's waves out
                then, low = now, remaining  # of order, one maybe written late: their lowest)
            self.last[tokens] = (then, low, low if now < boundary else ahead)

    def jumped(self, tokens: bool, remaining: int, limit: int, counted: int,
               now: float) -> str | None:
        """Why ``remaining`` of ``limit``, read at ``now`` just after the candidate boundary,
        shows the count started afresh there (None if not): up from the lowest read about it by
        more than a bucket refills meanwhile and from the lowest before it (not within one wave
        of a proxy's answers out of order), above what a sliding window still counting
        ``counted`` of ours (answered within a window) could report. Read from answers to ours
        sent before the boundary: a server that queues a burst shows it within a moment."""
        boundary, before = self.candidate, self.last.get(tokens)
        if boundary is None or before is None or self.kind != "unknown":
            return None
        then, earlier, ahead = before
        # readings straddling the boundary closely (a tenth of a window: a server that queues
        # answers in waves), the one before maybe written late after it (LiteLLM's proxy with
        # 1,024 in flight: still falling until :04, back up at :07): the count started afresh
        window = self.window
        if not (boundary - window / 10 < then and boundary <= now < then + window / 10
                and now < boundary + window / 4):
            return None
        tolerance = max(1, limit // 20)
        up = remaining - max(earlier + (now - then) * limit / window, ahead)  # (not in one wave)
        if up <= tolerance or remaining <= limit - counted + tolerance:
            return None
        return (f"up from {earlier} just before, {remaining} of {limit} "
                f"{'tokens' if tokens else 'requests'} remaining")

    def skew(self) -> float:
        """Seconds past a (supposed or learned) boundary a request goes to be counted after it
        (:func:`.fixed.skew`): the clocks' skew for the wall clock's minute (a candidate the
        server's reset did not point to, a clock minute learned so), else the ``doubt``."""
        on_clock = not self.vouched if self.candidate is not None else self.late
        return skew(self.margin, self.window, on_clock, self.doubt)

    def probe_at(self) -> float | None:
        """When the head of a blocked line may be sent as a probe (None: no probe now): the
        skew past the candidate boundary (whatever the way there takes, a request admitted
        after the boundary arrives after it), and never before a short retry-after ends."""
        if self.candidate is None or self.since is not None or not self.probes:
            return None
        return max(self.candidate + self.skew(), self.hold)

    def defer(self) -> None:
        """The first answer after the candidate boundary fits a fixed window counting answers
        and a sliding window alike (every one of ours the server could have counted there was
        sent within a window): suppose the next boundary instead, where the answers that
        straddle it (:meth:`jumped`) or a probe tell them apart (a probe within the quota:
        the server's reset, if it pointed to the first, did not point to that one)."""
        if self.candidate is not None:
            self.candidate += self.window
        self.since, self.probe, self.vouched, self.last, self.rose = None, None, False, {}, None

    def confirm(self, fresh: bool, detail: str) -> bool:
        """The first answer after the candidate boundary: ``fresh`` when the server counted
        from zero there. True when the shape became a fixed window."""
        boundary, self.probe = self.candidate, None
        if fresh and boundary is not None:
            self.late = not self.vouched
            return self.learn("fixed", f"{detail} after the clock minute: a fixed window "
                                       "starting afresh at each minute", boundary, self.doubt)
        self.probes = 0
        self.learn("sliding", f"{detail} after the clock minute: not a fixed window; "
                              "paced as a sliding window")
        return False

    def __repr__(self) -> str:
        return f"{self.kind} ({self.why}{self.limits}{self.short or ''})"
