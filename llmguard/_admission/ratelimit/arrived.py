"""Ours admitted within the margin before a learned fixed window's boundary (:mod:`.fixed`),
counted once their answers timed their way there only in the windows their arrival may lie in.

A fixed count counts an admission ``margin`` s before a boundary in both windows: the server
may count it after the boundary, as late as the slowest of ours lately took on the way. Once
its answer's headers timed its own way there (:attr:`.log.Entry.way`, :mod:`.latency`: the
round trip less the server's own time on it), it arrived no later than that after admission:
before the boundary, it was counted in the window before, and no longer fills the one after.
Counted in both, a batch started within the margin before a clock minute (60 admitted at
:59.95, the margin 0.05 s, each answered 2 s later) left the next minute full of ours the
server had counted in the last one: no request of ours arrived in it to be answered with its
count (:meth:`.fixed.FixedCount.vouch`), and the whole minute went unused (1.97x the ideal
from :59.95 to :59.99, 1.00x from :59.93).

Only against a server that counts as requests arrive (``FixedCount.recent`` None): one that
queues counts ours when it takes them, however soon they arrived (:mod:`.crossed` carries them
into the next window). A learned boundary lies no earlier than the one it was read as
(:func:`.fixed.narrow`: the server's up to its doubt later), so arriving before ours is
arriving before the server's. Takes its inputs as arguments (no clock): tested directly.
"""

from __future__ import annotations

from typing import Any

from .holds import reached

__all__ = ["counted", "forget", "indices", "timed"]


def indices(fixed: Any, entry: Any) -> tuple[int, ...]:
    """The windows ``fixed`` (a :class:`.fixed.FixedCount`) counts ``entry`` in: those its
    admission may lie in (a boundary's skew before it) and, once timed (:func:`timed`), its
    arrival; else those its arrival within the margin may."""
    if id(entry) in fixed.timed:
        return fixed.spans(entry.time, min(fixed.margin, reached(entry, fixed.margin)))
    return fixed.spans(entry.time, fixed.margin)


def counted(fixed: Any, entry: Any) -> tuple[int, ...]:
    """The windows ``fixed`` counts ``entry`` in as it is added: recounted (``rebuild``) after
    its answer timed it, only those its arrival may lie in."""
    if getattr(entry, "way", None) is not None:
        timed(fixed, entry, counted=False)
    return indices(fixed, entry)


def timed(fixed: Any, entry: Any, counted: bool = True) -> bool:
    """``entry``'s way there is known (its answer's headers timed it): when its arrival lies
    before a boundary its margin crosses, it counts only in the windows before it from now on
    (``counted``: the windows after it no longer count it either). True when so."""
    if fixed.recent is not None or id(entry) in fixed.timed \
            or getattr(entry, "way", None) is None:
        return False
    wide = fixed.spans(entry.time, fixed.margin)
    narrow = fixed.spans(entry.time, min(fixed.margin, entry.way))
    if narrow == wide:
        return False
    fixed.timed[id(entry)] = entry  # (the entry kept: its id is not reused meanwhile)
    if counted:
        weight = fixed._weight(entry)
        for index in wide:
            if index not in narrow and index in fixed.counts:
                fixed.counts[index] -= weight
    return True


def forget(fixed: Any, current: int) -> None:
    """Ours timed admitted before the window before ``current``: no window they count in is
    kept any more (``FixedCount.counts``, the current and the next)."""
    fixed.timed = {key: entry for key, entry in fixed.timed.items()
                   if fixed.index(entry.time) >= current - 1}
