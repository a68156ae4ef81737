"""Whether the server gives unused output back: learned from its output ``remaining`` readings.

Anthropic's output-token bucket charges ``max_tokens`` as a request arrives and gives back what
the answer did not use as it ends; a server keeping the whole reservation charged (another
provider, a gateway) would be overrun by a client giving it back. So the output reservation is
kept until the server's readings show it giving back (then the answers held back too, if recent).

Comparing a reading with our own bucket misleads: ours refills slower than the server's (the
margin), so under sustained load the server drifts ahead of us, and ours not yet arrived make it
look emptier than ours. Instead two of its readings are compared with each other: between them
the server's bucket refilled ``limit / window`` a second (its ``-limit`` header's), was charged
the ``max_tokens`` of ours that arrived, and, if it gives back, got back the unused output of
the answers that ended (``given``; nothing of ours on the way, those served between the two,
by what they show: :mod:`.giveback_order`). Ours arriving are known but for those on the way at
either end (admitted within ``spread`` of it), so::

    residual = reading - (earlier reading + refill - ours admitted in between)

is about ``given`` on a server that gives back and about 0 on one that does not, up to the
requests on the way at either end and a clock slack. A span is judged only once ``given`` is
large against those bounds; two spans agreeing decide (judgements can later flip the verdict).
A server near full may have lost refill (a bucket stops at its size): the span restarts there.
Other clients' use only lowers readings, toward "keeps it": the safe side. With no output
reading heard (a client that reads no header), the server is tested instead: one answer's unused
output at a time is given back, and the request admitted only thanks to it is served (the server
gives back) or refused with a 429 (it does not: the one 429 this costs), :meth:`GiveBack.refused`.
A burst's answers, too few for that, are judged on a tighter bound: :mod:`.giveback_burst`.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from .giveback_burst import Burst
from .giveback_minute import Minute
from .giveback_order import Anchor, Quiet

__all__ = ["GiveBack"]

#: Judgements agreeing (net) before the verdict changes.
_DECIDE = 2


class GiveBack:
    """What one key's output readings say about the server giving unused output back.
    ``verdict``: None (not yet known: kept, as by a server that does not), True or False."""

    __slots__ = ("spread", "window", "quota", "horizon", "verdict", "votes", "why", "issued",
                 "given", "largest", "recent", "anchor", "held", "credit", "probe", "told",
                 "told_doubt", "telling", "minute", "decisive", "burst", "order")

    def __init__(self, spread: float, window: float) -> None:
        #: Seconds a request of ours may take to reach the server.
        self.spread = spread
        #: The output quota's window: the server refills ``limit / window`` a second.
        self.window = window
        self.quota = 0  # our output quota's limit per ``window``
        #: Seconds an answer's unused output is held back, awaiting the verdict, at most.
        self.horizon = window / 6
        self.verdict: bool | None = None
        self.votes, self.why = 0, "no output reading judged yet: max_tokens kept charged until it is"
        #: Output tokens of ours admitted (less those that never reached the server) and
        #: unused output of our answers ended, since the start.
        self.issued = self.given = self.largest = 0
        self.recent: deque[tuple[float, int]] = deque()  # (admitted at, output) within spread
        #: The earlier reading: (time, remaining, issued, given, ours on the way then).
        self.anchor: Anchor | None = None
        #: Answers whose unused output awaits the verdict: (ended at, what to settle, unused).
        self.held: deque[tuple[float, Any, int]] = deque()
        #: With nothing heard: unused output given back to test the server, not yet tested,
        #: and the reservation (its output entry) admitted only thanks to it.
        self.credit, self.probe = 0, cast(Any, None)
        #: The verdict last shared or adopted (a shared backend), in doubt or not, the write.
        self.told: bool | None = None
        self.told_doubt, self.telling = False, None  # (a task: until done, replies may predate it)
        #: Ours per clock minute: a served test a fresh minute explains (not ``decisive``)
        #: gives back only provisionally (:mod:`.giveback_minute`).
        self.minute, self.decisive = Minute(window), True
        self.burst, self.order = Burst(window), Quiet()  # a burst's readings; in their order

    def admitted(self, now: float, output: int, entry: Any = None,
                 level: Callable[[], int] | None = None, wall: float | None = None) -> None:
        """Ours reserved ``output`` tokens at ``now`` (``wall`` by the wall clock; about to
        be sent; ``entry``), with ``level()`` output tokens by our count before it: one that
        fits only thanks to the ``credit`` tests the server (:meth:`refused`)."""
        over = wall is None or self.minute.admitted(wall, output, self.quota, entry)
        if self.credit and self.probe is None and level is not None \
                and level() - self.credit < output:
            self.probe, self.decisive = entry, over
        self.anchor = self.order.admitted(self.anchor, self.issued, self.spread)
        self.issued += output
        self.burst.admitted(now, output, entry, self.issued, self.given)
        self.largest = max(self.largest, output)
        recent = self.recent
        recent.append((now, output))
        while recent[0][0] < now - self.spread:
            recent.popleft()

    def uncharged(self, output: int, entry: Any = None) -> None:
        """A reservation of ``output`` (``entry``) the server never charged (never sent, or
        refused): a probe never sent tests nothing."""
        self.issued -= output
        self.burst.closed(entry)
        if entry is not None and entry is self.probe:
            self.probe = None

    def ended(self, now: float, used: int, kept: int, reconcile: Any, entry: Any = None) -> bool:
        """An answer (to ``entry``) ended having ``used`` output of the ``kept`` it reserved;
        ``reconcile(n)`` settles its reservation to ``n``. True when settled now, else held
        until it can be."""
        unused = kept - used
        settle = partial(_settle, reconcile, used, kept)
        self.given += max(0, unused)
        self.burst.answered(entry, unused)
        self.order.ended(now, entry, unused, self.given)
        if entry is not None and entry is self.probe:  # served (an answer without usage,
            if unused <= 0:  # e.g. an error after it was sent, tests nothing: the next one)
                self.probe = None
            else:
                if not self.decisive:  # a window counting per clock minute had room for it
                    self.minute.doubt()
                self._decide(True, f"a request admitted only thanks to {self.credit} unused "
                                   "output given back was served (no output header heard"
                                   + ("" if self.decisive else "; or a clock minute's window "
                                      "started afresh: until a 429 says so") + ")")
        self.minute.served(entry)  # beyond what a minute's window holds: not one
        if self.verdict is not None or unused <= 0:
            settle(self.verdict is True)
            if self.verdict:
                self.minute.given(now, unused, entry)
            return True
        self.held.append((now, settle, unused))
        self.expire(now)
        self._release()
        return False

    def _release(self) -> None:
        """With nothing heard, give back the oldest held answer's unused output, to test the
        server (:meth:`refused`) when no test is under way."""
        if self.anchor is None and self.verdict is None and not self.credit and self.held:
            _, settle, self.credit = self.held.popleft()
            settle(True)

    def _decide(self, verdict: bool, why: str) -> None:
        self.verdict, self.why = verdict, why
        self.votes = _DECIDE if verdict else -_DECIDE
        self.probe, self.credit = None, 0
        for _, settle, _ in self.held:
            settle(verdict)
        self.held.clear()

    def refused(self, entry: Any, output: bool = True) -> int:
        """A 429 answered the request of ``entry`` (``output``: it may be the output's): the
        output tokens to charge again (0: nothing learned).

        With no output reading heard, one answer's unused output at a time is given back
        (the ``credit``) and the first request admitted only thanks to it is the test: served,
        the server gives unused output back (Anthropic's rule), the answers held meanwhile
        too; refused, it keeps ``max_tokens`` charged, and the credit is charged again. A 429
        of another cause (another client, the input, a window ending) may refuse the test
        too: then the charge is kept, slower, never over the quota. One 429 at most, per
        key, learns it."""
        if entry is None or entry is not self.probe:
            lent = self.minute.refused() if self.verdict and output else None
            if lent is not None:  # the clock minute's window, not a give-back, served the test
                self._decide(False, f"a 429 after a test a clock minute's fresh window "
                                    f"explains: max_tokens kept charged, {lent} lent charged")
            return lent or 0
        again = self.credit
        self._decide(False, f"a request admitted only thanks to {again} unused output given "
                            "back was refused (429; no output header heard)")
        return again

    def adopt(self, verdict: bool, why: str, doubt: bool = False) -> int:
        """Another process's verdict (shared through the backend) taken as this one's, in
        ``doubt`` as there (:meth:`.giveback_minute.Minute.shared`): the output tokens to
        charge again (a test's credit and what was lent, now known kept)."""
        again = (self.credit if verdict is False else 0) + self.minute.shared(verdict, doubt)
        self.told, self.told_doubt = verdict, doubt
        if verdict is not self.verdict:
            self._decide(verdict, f"learned by another process: {why}")
        return again

    def expire(self, now: float) -> None:
        """Settle (keeping the charge) what was held back longer than ``horizon``."""
        while self.held and self.held[0][0] < now - self.horizon:
            self.held.popleft()[1](False)
        self._release()

    def _on_the_way(self, now: float) -> int:
        return sum(output for at, output in self.recent if at >= now - self.spread)

    def read(self, now: float, remaining: int, limit: int, wall: float | None = None,
             entry: Any = None, started: bool = False) -> None:
        """A reading of the server's output ``remaining`` of ``limit`` per ``window`` s, at
        ``now`` (``wall`` by the wall clock; None: ``now`` is), in the answer to ``entry``
        (``started``: as its stream started, as of its admission: :mod:`.giveback_burst`)."""
        on_the_way, anchor = self._on_the_way(now), self.anchor
        here = (now, remaining, self.issued, self.given, on_the_way)
        # the faster of the server's rate and our quota's: a refill over-counted errs toward
        # "keeps it" (our quota may be the server's minute compressed, or a lower share of it)
        rate, burst = max(limit, self.quota) / self.window, self.burst
        self.order.heard(entry, remaining)
        if not self.verdict and burst.read(self, now, remaining, rate, wall, entry, started):
            self._decide(True, f"the server's output remaining rose above its refill less ours "
                               f"by about the unused output of the answers ended, twice within "
                               f"{self.horizon:.0f} s of a burst's answers, and did not drop "
                               "after")
        slack = rate * self.spread
        given = None if anchor is None else self.order.given(anchor, here, self.spread, slack)
        if given is None or remaining >= limit - slack - on_the_way:
            self.anchor = here  # first, near full (refill may be lost), or older: start here
            self.expire(now)
            return
        at, before, issued, _, then = anchor
        residual = remaining - (before + rate * (now - at) - (self.issued - issued))
        # residual on a server that keeps the charge: at most ours on the way now (charged
        # later) plus the slack; on one that gives back: at least given less ours on the way
        # at the anchor (charged in between, counted before it) and the slack
        # ... and one of ours arriving later than ``spread`` (a straggler) either way
        low_keep, high_keep = -then - slack - self.largest, on_the_way + slack + self.largest
        if given < 2 * (high_keep - low_keep):
            self.expire(now)
            return  # too little given back yet to tell: the span goes on
        self.anchor = here
        vote = 1 if residual > high_keep + given / 2 else -1 if residual < given / 2 else 0
        if vote:
            self.votes = max(-_DECIDE, min(_DECIDE, self.votes + vote))
            if abs(self.votes) == _DECIDE and self.verdict is not (vote > 0):
                self._decide(vote > 0, f"the server's output remaining rose {residual:.0f} "
                             f"above its refill less ours in {now - at:.1f} s, {given} unused "
                             "output ended" if vote > 0 else
                             f"the server's output remaining did not rise with the {given} "
                             f"unused output of answers ended in {now - at:.1f} s")
        self.expire(now)

    def idle(self, now: float) -> bool:
        """True when no answer is held back (past ``horizon``: settled now, as kept) and
        nothing was admitted for a window."""
        self.expire(now)
        return not self.held and (not self.recent or self.recent[-1][0] < now - self.window)

    def describe(self) -> str:
        """What was learned, for ``repr`` and the statistics."""
        if self.anchor is None and self.verdict is None:
            return ("max_tokens kept charged but one answer's unused output at a time, given "
                    "back to test the server (no output remaining header heard yet)")
        said = {None: "max_tokens kept charged until the server shows it gives unused output "
                      "back", True: "unused output given back (the server does)",
                False: "max_tokens kept charged (the server does not give unused output back)"}
        return f"{said[self.verdict]}: {self.why}"


def _settle(reconcile: Any, used: int, kept: int, give: bool) -> None:
    reconcile(used if give else max(used, kept))
