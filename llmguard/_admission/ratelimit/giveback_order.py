"""Readings heard while nothing of ours goes to the server, ordered by what they show.

:meth:`.giveback.GiveBack.read` judges a span between two readings on the unused output of the
answers heard between them (``given``). Answers come back out of the order the server served
them (0-10 ms each way): a reading heard after others may be older than they are, so the
answers heard between two readings are not those served between them. A wave of 15 answered
together at :60 (started at :58, so the burst judge of :mod:`.giveback_burst` starts anew at
each reading) ended a span on a reading older than four heard before it: 952 unused output
ended "in" it, a rise of 136, a vote "keeps it", ``max_tokens`` kept charged (4.1x).

While nothing of ours is admitted or on the way, the server's ``remaining`` only rises (its
refill, the unused output given back; other clients only lower it, toward "keeps it"): the
readings are then in the order the server served them when ordered by what they show, not by
arrival. So:

- a reading below the earlier one (the span's anchor), heard within ``spread`` of it, is
  older than it: the span starts from it instead (the one served first; its time taken as
  heard, the refill counted from it errs by the slack ``GiveBack`` allows for);
- the answers served between the two readings are those whose own reading lies between them
  (a reading shows the answers served before it, not its own): their unused output is what
  the server gave back in the span, whatever the order they were heard in. As ours are
  admitted again, the anchor is rebased so (:meth:`Quiet.admitted`): the span it starts
  goes on with ours charged in it, where readings are compared as heard.

Skipping the readings below the highest heard instead (no vote) left the anchor on a reading
showing more answers' unused output than counted before it: the next span voted "keeps it"
(1.44x). On a bucket keeping ``max_tokens`` charged nothing rises but the refill either way;
without jitter the two orders agree and so does the count (every table byte-identical).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Quiet"]

#: ``GiveBack``'s anchor: (heard at, remaining, ours issued, given, ours on the way then).
Anchor = tuple[float, int, int, int, int]


class Quiet:
    """Our answers heard since ours were last admitted: each one's reading (``read``, by
    ``id(entry)``, until its usage is known), then (reading, unused output, ``GiveBack.given``
    with it, heard at) in ``answers``."""

    __slots__ = ("answers", "read")

    def __init__(self) -> None:
        self.answers: list[tuple[int, int, int, float]] = []
        self.read: dict[int, int] = {}

    def admitted(self, anchor: Anchor | None, issued: int, spread: float) -> Anchor | None:
        """Ours admitted (``issued`` before it): the readings heard before lack its charge,
        start anew. The span's ``anchor`` (``GiveBack``'s, heard with nothing of ours charged
        since) is returned counting as given before it the answers served before it (showing
        less), not those served after it (showing more), whenever heard."""
        if anchor is not None and anchor[4] == 0 and anchor[2] == issued:
            at, before, _, since, _ = anchor
            moved = sum(unused if stamp > since else -unused
                        for shown, unused, stamp, heard in self.answers
                        if (shown < before if stamp > since else
                            heard >= at - spread and shown > before))
            anchor = (*anchor[:3], since + moved, 0)
        self.answers.clear()
        self.read.clear()
        return anchor

    def heard(self, entry: Any, remaining: int) -> None:
        """The answer to ``entry`` (None: not known as ours) showed ``remaining``."""
        if entry is not None:
            self.read[id(entry)] = remaining

    def ended(self, now: float, entry: Any, unused: int, given: int) -> None:
        """The answer to ``entry`` ended at ``now`` with ``unused`` output (``given`` in all
        with it): kept where its reading is known."""
        shown = self.read.pop(id(entry), None) if entry is not None else None
        if shown is not None and unused > 0:
            self.answers.append((shown, unused, given, now))

    def given(self, anchor: Anchor, here: Anchor, spread: float, slack: float) -> int | None:
        """The unused output given back between the readings ``anchor`` and ``here`` (as
        ``GiveBack`` keeps them), ``slack`` the refill's error: counted by arrival (ended
        after the anchor was heard) but, with nothing of ours charged in between, less those
        showing below the anchor or above ``here`` (served before or after) and plus those
        heard before the anchor, within ``spread`` of it, showing between (served in it).
        None: ``here`` is older than the anchor (lower, heard within ``spread`` of it)."""
        at, low, issued, since, then = anchor
        now, high, issued_now, counted, on_the_way = here
        counted -= since
        if then or on_the_way or issued != issued_now:
            return counted  # ours charged in between lower the later readings: by arrival
        if high < low - slack and now - at <= spread:
            return None
        for shown, unused, stamp, heard in self.answers:
            if stamp > since and not low <= shown <= high:
                counted -= unused
            elif stamp <= since and heard >= at - spread and low < shown < high:
                counted += unused
        return counted
