"""What the server charges a request against a token quota, learned from its headers
(``refill="auto"``): the factor our estimate is scaled by, and nothing given back.

A server counts tokens its own way. OpenAI counts a request at admission from its characters
(framing included) plus ``max_tokens``, not from the tokens its usage later reports, and gives
nothing back when the answer is shorter; an estimate 10% under that count overshoots every
window by 10% (8% of requests refused). So under a learned token quota:

* **Opening.** Until the server has said anything, a reservation is the estimate times
  :data:`OPENING` (an opening burst stays within the quota with an estimate up to 13% under).
* **Probing.** A server whose answers carry no token readings (``silent``) may count ours
  at their estimate or more, keeping ``max_tokens`` charged, or count the usage: what was
  reserved stays counted, and a request the token quota holds back goes anyway, one at a
  time, as a probe of what it counts (:mod:`.probing`): each one admitted within our bare
  estimates brings the factor down, one admitted only if the usage is what counts shows the
  server gives the unused part back (``trusted``: factor 1, the usage counted).
* **Refused.** A 429 on tokens before any reading (:mod:`.refusal`), a probe's or another's:
  the server counted ours admitted before the refused one at the quota or more, so it charges
  at least ``limit`` over their estimates. That is the factor from then on, and what it
  charged is kept (``kept``), the entries of the window counted again at it.
* **Calibration.** A burst of ours reaches the server within a moment, and each answer's
  ``remaining`` counts the ones that arrived before it: the highest and lowest readings of a
  burst differ by the charges of all but the first to arrive. That difference over our
  estimates for those requests is the factor (others' traffic only makes it larger: safe;
  :mod:`.calibration`).
* **Unused output.** A server that reports tokens in ``x-ratelimit-remaining-tokens`` counts
  them as OpenAI documents: the prompt and ``max_tokens`` at admission, nothing given back
  when the answer is shorter. So a reconciliation keeps what the server charged (the estimate
  times the factor; more when the usage says more): giving the unused part back to our own
  count let a limiter under ConcurrencyLimit(8) run ahead of the server (2 429s of ~143);
  separate input and output quotas (Anthropic's) are reconciled apart (:mod:`.split`).

Everything here takes numbers (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from . import calibration
from .bounds import fitted, ours, unrefilled
from .recounted import recount

__all__ = ["OPENING", "Charge"]

#: The factor of an opening burst, before the server has calibrated it; the most calibration
#: may reach (a server counting 3x the estimate is a broken estimator).
OPENING, MOST = 1.15, 3.0


class Charge:
    """The charge factor of one partition's token quotas and what reconciliation keeps."""

    #: Its window holds only this process's part of what the server counts (a shared
    #: backend's mirror): what fits that part refutes nothing (:mod:`.learn_refusal`).
    partial = False

    __slots__ = ("factor", "heard", "silent", "burst", "limit", "kept", "probing", "testing",
                 "trusted", "refills", "windowed", "least", "guessed", "clocked", "floor",
                 "ceiling", "paced")

    def __init__(self, limit: int) -> None:
        #: Our estimate times this is what the server is believed to count.
        self.factor = OPENING
        #: The server reported tokens (its readings calibrate); ``silent``: it answered without.
        self.heard = self.silent = False
        #: ``[anchor send time, [(remaining, entry), ...], first heard]`` of the burst read.
        self.burst: list[Any] = [None, [], 0.0]
        #: The smallest token quota: no reservation is scaled past it.
        self.limit = limit
        #: A 429 on tokens, no reading yet, measured the factor (:meth:`refused`).
        self.kept = False
        #: The entry of the last probe (:mod:`.probing`), until the next admission reads it;
        #: ``testing``: it tests whether the server gives unused tokens back (``trusted``:
        #: it does, the usage is what counts).
        self.probing: Any = None
        self.testing = self.trusted = False
        #: A give-back probe was admitted that a token bucket refilling since ours went would
        #: admit too (nothing given back), or refused (:func:`.probing.kept`): the test ends.
        self.refills = False
        #: The most a server counting ours in a window (fixed or sliding, no refill) charges,
        #: shown by the probes it admitted (:mod:`.probing`); ``least``: the least, by a 429.
        self.windowed, self.least = math.inf, 1.0
        #: The most a fixed clock-minute window charges, shown by the probes it admitted (ours
        #: surely counted in each one's minute: :func:`.bounds.clocked`).
        self.clocked = math.inf
        #: The least a token bucket charges, by the 429s, and the most, by the probes served
        #: (:mod:`.refuted`: a floor above the ceiling, no bucket); ``paced``: the most with
        #: ours arriving as late as their way there allows, what a bucket is paced at.
        self.floor, self.ceiling, self.paced = 0.0, math.inf, math.inf
        #: A probe of the factor beyond a fixed window as we count ours was refused
        #: (:func:`.silent.refusal`): kept, at a factor no window's count measured, so a
        #: probe beyond a bucket as we count ours proves no fixed window (:func:`.apart.cheaper`;
        #: taken as one, a strict token bucket started at :45 got 30 429s, calls failed).
        self.guessed = False

    def units(self, estimate: int) -> int:
        """Tokens to reserve for a call estimated at ``estimate``."""
        factor = self.factor
        if factor == 1.0:
            return estimate
        # ``min(self.limit, max(estimate, ceil(...)))``, written out (twice on every call)
        units = math.ceil(estimate * factor - 1e-9)
        if units < estimate:
            units = estimate
        return units if units < self.limit else self.limit

    def settled(self, entry: Any, tokens: int, answered: bool = True,
                bucket: bool = False) -> int:
        """What an admitted entry counts once reconciled to ``tokens`` (the usage the answer
        reports, or the estimate when it reports none; ``answered``: an answer came). A
        learned ``bucket`` settles to the usage: its refunds are bounded to what the server's
        bucket is sure to hold (:func:`.bucket.settle`) and its last reading leaves
        (:meth:`.bucket.Bucket.ceiling`: OpenAI keeps the unused part), and readings drain it."""
        if answered and not self.heard and not self.silent and not self.kept and entry.live:
            self.silent = True  # answered, and nothing said about tokens: probed from now on
        if entry.refused:  # a 429: the server charged none of its tokens (a retry is anew)
            return 0
        if self.silent and answered:
            entry.used = tokens  # what counts if the server gives unused tokens back
        # a bucket learned from a server that says nothing (:mod:`.silent`) drains by no
        # reading: what it keeps charged stays counted, as on any silent server
        if (bucket and self.heard) or (self.silent and self.trusted) or not (
                self.heard or self.silent or self.kept):
            return tokens
        # the calibrated charge, never above the reservation (a burst read in part calibrates
        # high for a moment), or more when the usage says so
        charged, factor = entry.estimate, self.factor  # ``self.units(entry.estimate)``,
        if factor != 1.0:  # written out (every call)
            units = math.ceil(charged * factor - 1e-9)
            if units < charged:
                units = charged
            charged = units if units < self.limit else self.limit
        # ``max(min(entry.tokens, charged), tokens)``, written out
        if not charged < entry.tokens:
            charged = entry.tokens
        return tokens if tokens > charged else charged

    def refused(self, window: Any, now: float, ticket: Any, limit: int) -> bool:
        """A 429 on tokens to ``ticket`` before any reading: ``window``'s server counted ours
        admitted before it (refused ones left out) at ``limit`` or more, so it charges at
        least ``limit`` over their estimates. Count at that from now on, keep it (nothing
        given back), and count ours still in the window at it. True when that changed
        anything."""
        entries = ours(window)
        # probing, one at a time: the server counted ours admitted before the refused one;
        # kept, a burst's 429: ours after it in the burst may have arrived first (jitter)
        before = entries if self.kept else [e for e in entries if e.seq < ticket.seq]
        estimated = sum(e.estimate for e in before)
        if estimated <= 0:
            return False
        # it charges more than limit / (estimated + the refused one's), at most limit over
        # what it admitted; each count rounded up, so one token less each fits them in
        factor = max(limit / (estimated + ticket.estimate), (limit - len(before)) / estimated,
                     fitted(window, ticket, MOST))
        self.least = max(self.least, min(MOST, limit / (estimated + ticket.estimate)))
        if not self.kept and unrefilled(window, ticket):
            # a bucket charging our factor would have admitted it: a window counted ours, no
            # refill, and what it admitted bounds the factor from above (kept at 1.15x, not
            # the 1.118x that fits, a strict sliding window ran 1.49x the ideal)
            # ours sent a margin or more before it surely arrived first and were admitted:
            # what fits them bounds it too (kept at what the probes before the minute allowed,
            # 1.146x, a strict sliding window from :55 took 41 a window where it admits 42)
            sure = [e for e in before if e.time < ticket.time - window.quotas[0].margin]
            fit = (limit - len(sure)) / max(1, sum(e.estimate for e in sure))
            factor = min(MOST, max(1.0, factor, min(self.factor, self.windowed, fit)))
        else:
            factor = min(MOST, max(1.0, self.factor, factor))
        if self.kept and factor <= self.factor:
            return False
        self.factor, self.silent, self.kept, self.trusted = factor, False, True, False
        self.probing = None
        recount(window, now, self, entries)
        return True

    def read(self, window: Any, now: float, remaining: int, ticket: Any,
             tracks: list[Any]) -> None:
        """A token reading of ``remaining`` in the answer to ``ticket`` (``window``'s token
        ``tracks``): calibrate the factor from its burst, and when it comes down count ours
        not settled at it (:meth:`rescale`). A burst heard before a window's start (learned,
        or the supposed clock minute once past it, the shape unknown: a rise there may show
        late) is read anew: a proxy's answers counted afresh read one burst 0.83x for 1.11x."""
        if window.shape is not None and window.shape.shorter:
            # a shorter window's (:func:`.learn.shorter`) readings cap what it counts; its
            # bursts read 1.0-3.0x for an exact estimate: charged as estimated, as by a log
            self.factor, self.heard = 1.0, True
            return
        factor = self.factor
        rate = min((t.bucket.rate for t in tracks if window.shape.kind == "bucket"
                    and hasattr(t, "bucket") and t.learns()), default=0.0)
        shape = window.shape
        start = -math.inf  # readings heard before a learned window's start count another
        horizon = -math.inf  # ours admitted before it may have left a sliding window by now
        if shape is not None and shape.kind == "fixed" and shape.epoch is not None:
            start = shape.next_boundary(shape.epoch, now) - shape.window
        elif not rate:
            horizon = now - max(t.quota.window - t.quota.margin for t in tracks)
            if shape is not None and shape.candidate is not None and now >= shape.candidate:
                start = shape.candidate  # read apart from those before the supposed boundary
        self.heard = True
        if self.silent:
            self.silent, self.trusted, self.probing, self.factor = False, False, None, OPENING
        measured = calibration.measure(self.burst, window.readings.spread, remaining, ticket,
                                       rate, now, start, horizon,
                                       getattr(tracks[0], "recent", ()), factor)
        if measured is not None:
            self.factor = min(MOST, max(1.0, measured))
        if self.factor < factor:
            self.rescale(window, now, factor)

    def rescale(self, window: Any, now: float, was: float | None = None) -> None:
        """The factor came down: ours in ``window`` the server counted and we have not settled
        were reserved at more than it charged; count them at what it did (before the reading
        drains us to the server's count, which has them at that). From ``was``, ours settled
        at it too (answered before the burst calibrated: a log that is not drained kept them
        at the opening factor, 2 x 32 tokens over the 36 a strict 10,000 TPM window left
        for its 47th request of a minute, sent a minute late: 1.49x the ideal)."""
        track = window.tracks[0]
        entries = list(getattr(getattr(track, "log", track), "entries", ()))
        if was is not None:  # settled at ``was``, not at a usage above it: as settled now
            recount(window, now, self, [
                e for e in entries if e.owner is None and e.live and not e.refused
                and e.tokens == min(self.limit, max(e.estimate, math.ceil(e.estimate * was - 1e-9)))
                and self.units(e.estimate) < e.tokens])
        recount(window, now, self, [e for e in entries if e.owner is window and e.live
                                    and self.units(e.estimate) < e.tokens])

    @property
    def how(self) -> str:
        """``"opening"`` (nothing heard yet), ``"heard"`` (token readings calibrate),
        ``"silent"`` (answers come without them: probed), ``"trusted"`` (probes showed the
        usage is what counts) or ``"kept"`` (a 429 on tokens calibrated it)."""
        if self.heard or self.kept:
            return "heard" if self.heard else "kept"
        return ("trusted" if self.trusted else "silent") if self.silent else "opening"

    def shared(self) -> str:
        """What this charge learned, for other processes (a shared backend): ``"factor,how"``
        (the factor to two decimals: a change below that is not worth telling)."""
        return f"{math.ceil(self.factor * 100 - 1e-9) / 100:.2f},{self.how}"  # never under

    def adopt(self, shared: str) -> None:
        """Take what another process learned (:meth:`shared`) while this one has heard
        nothing yet (its own readings calibrate it from then on)."""
        factor, _, how = shared.partition(",")
        if self.heard or self.silent or self.kept or how not in ("heard", "silent", "kept",
                                                                  "trusted"):
            return
        self.factor = min(MOST, max(1.0, float(factor)))
        self.heard, self.kept, self.trusted = how == "heard", how == "kept", how == "trusted"
        self.silent = how in ("silent", "trusted")

    def __repr__(self) -> str:
        return f"<Charge x{self.factor:.3g} {self.how}>"

