"""What a probe in flight costs a server that says nothing (issue #36): when it counts as
served (``served.served_at``) is asked several times an admission, and each answer read
every one of ours within two windows (``refuting``, ``answering``): 40% of the CPU at
900 RPM, milliseconds a call at 10,000. Each result is kept while nothing it read changed
(``changed.py``): ours read once while they stand, and the same answer as read afresh once
one is refunded, refused, answered or admitted. Counts, no clock."""

import math
from collections import deque
from typing import Any

from llmguard._admission.ratelimit import bounds, learn_refusal, move, probing, served
from llmguard._admission.ratelimit.window import Quota, Window

MARGIN = 0.05
CALLS = 869  #: ours at :00, 1,000 tokens each (1,150 at the opening factor): 1,000,000 TPM full


class Counted(deque):
    """A log's entries or ``recent``, counting the entries read from it."""

    read = 0

    def __iter__(self) -> Any:
        for entry in super().__iter__():
            self.read += 1
            yield entry

    def __reversed__(self) -> Any:
        for entry in super().__reversed__():
            self.read += 1
            yield entry


def flying() -> tuple[Window, Any]:
    """``CALLS`` of ours at :00 (the opening factor), answered at :02 but the last 4; a probe
    of the charge then, answered at :04 (served: ``Charge.ceiling`` bounds a bucket), and the
    next one sent then, in flight: the window and that one."""
    w = Window((Quota(10_000, 60.0 + MARGIN, False, learn=True, margin=MARGIN),
                Quota(1_000_000, 60.0 + MARGIN, True, learn=True, margin=MARGIN)))
    w.shape.quiet = True
    w.charge.silent = True
    for entry in [w.add(0.0, 1_000) for _ in range(CALLS)][:-4]:
        w.adjust(2.0, entry, entry.tokens)
    first = probing.probe(w.charge, w, 2.0, 1_000)
    w.adjust(4.0, first, first.tokens)
    probe = probing.probe(w.charge, w, 4.0, 1_000)
    assert w.charge.probing is probe and math.isfinite(w.charge.ceiling)
    return w, probe


def counted(w: Window) -> tuple[Counted, Counted]:
    """The bucket's ``recent`` and the log ``answering`` reads, counting what is read."""
    track, log = bounds.bucket_of(w), bounds.bucket_of(w).log
    track.recent = track.peer.recent = Counted(track.recent)
    log.entries = log.peer.entries = Counted(log.entries)
    return track.recent, log.entries


def scanned(w: Window, probe: Any) -> tuple[float, float]:
    """What ``served_at`` reads of ours: ``refuting``'s bound and ``answering``'s seconds."""
    return served.refuting(w, bounds.bucket_of(w), probe), served.answering(w)


def afresh(w: Window, probe: Any) -> tuple[float, float]:
    """The same, every one of ours read again."""
    w.scans.clear()
    return scanned(w, probe)


def test_asked_again_while_nothing_changed_a_probe_reads_none_of_ours() -> None:
    w, probe = flying()
    recent, entries = counted(w)
    at = served.served_at(w, probe)
    assert at == 4.0 + served.QUIET * MARGIN and 2.0 < scanned(w, probe)[0] < at
    first = recent.read + entries.read
    assert first >= 2 * CALLS
    for now in (4.01, 4.02, 4.03, 4.04):  # each admission asks, and each wake-up
        assert probing.due(w.charge, w, now, 1_000) in (None, at)
        assert served.served_at(w, probe) == at
    assert recent.read + entries.read == first  # (each asked read them all: 13x, #36)


def test_what_changes_ours_is_read_afresh() -> None:
    """A refund, a 429, an answer, a move and an admission each change what a scan read: the kept
    result goes, the next one is what every one of ours read afresh tells."""
    w, probe = flying()
    ours = [e for e in bounds.bucket_of(w).recent if e.answered == math.inf and e is not probe]

    def refund() -> None:
        w.adjust(4.05, ours[0], 0, live=0)

    def refuse() -> None:
        learn_refusal.refused(w, 4.06, ours[1], 1.0, 4.06)

    def answer() -> None:
        w.adjust(4.07, ours[2], ours[2].tokens)

    def moved() -> None:  # refunded, taken anew (:mod:`.move`)
        move.move(w, 4.08, ours[3], 1_000)

    def admit() -> None:
        w.add(4.09, 1_000)

    for change in (refund, refuse, answer, moved, admit):
        before = scanned(w, probe)
        change()
        assert before != scanned(w, probe) == afresh(w, probe), change.__name__
