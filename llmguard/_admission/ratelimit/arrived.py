"""Ours admitted within the margin before a learned fixed window's boundary (:mod:`.fixed`),
counted once their answers dated them only in the windows the server may have counted them in
(their arrival; their take from a queue).

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

A server that queues (``FixedCount.recent`` given) counts ours when it takes them, however soon
they arrived: dated instead by their answers, taken at the latest the least the server worked
on one of ours before it (:func:`.answers.latest`; a 429 does no work: counted, if at all, by
its answer). A proxy with 4 workers fed a batch from :59.9 took 3 of ours sent at :119.95
before the minute and refused the 4th: counted in the next minute too, they held it 4 short,
and the last 3 calls went a minute late (1.21x the ideal; 1.00x once their answers at :121.95
dated them before it). A learned boundary lies no earlier than the one it was read as
(:func:`.fixed.narrow`: the server's up to its doubt later), so arriving before ours is
arriving before the server's. Takes its inputs as arguments (no clock): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from .answers import latest

__all__ = ["answered", "before", "counted", "dated", "forget", "indices", "taken", "timed",
           "took", "vouched"]


def indices(fixed: Any, entry: Any) -> tuple[int, ...]:
    """The windows ``fixed`` (a :class:`.fixed.FixedCount`) counts ``entry`` in: those its
    admission may lie in (a boundary's skew before it) and, once dated (:func:`timed`), its
    count; else those its arrival within the margin may."""
    timed = fixed.timed.get(id(entry))
    return fixed.spans(entry.time, fixed.margin if timed is None else timed[1])


def counted(fixed: Any, entry: Any) -> tuple[int, ...]:
    """The windows ``fixed`` counts ``entry`` in as it is added: recounted (``rebuild``) after
    its answer timed its way there, only those its arrival may lie in. A take from a queue is
    dated only as the server's answer is read (:func:`dated`): dated on a recount, a silent
    fixed window on a cold network (no count ever said) had one of ours admitted 0.5 s before
    the minute leave the next one's count, and the charge its probes bound rose to 1.12x our
    estimate (41 a minute, 1.90x the ideal)."""
    if fixed.recent is None:
        timed(fixed, entry, counted=False)
    return indices(fixed, entry)


def reach(fixed: Any, entry: Any, now: float = math.inf) -> float | None:
    """Seconds after its admission the server counted ``entry`` at the latest, as its answer
    (by ``now``: read now, the call not yet settled) dates it: its way there to a server that
    counts at arrival (once its answer's headers timed it); to one that queues, its answer
    less the least the server worked on one of ours, or a 429's answer. None: not known."""
    if fixed.recent is None:
        return getattr(entry, "way", None)
    answered = min(entry.answered, now)
    if answered == math.inf:
        return None
    if entry.refused:
        return answered - entry.time
    worked = [e for e in fixed.recent if e.live and not e.refused and e.answered < math.inf
              and e is not entry]
    return latest([*worked, entry], [*(e.answered for e in worked), answered])[-1] - entry.time


def timed(fixed: Any, entry: Any, counted: bool = True, now: float = math.inf) -> bool:
    """``entry``'s answer dated its count (:func:`reach`, its answer read by ``now``): when it
    lies before a boundary its margin crosses, it counts only in the windows before it from
    now on (``counted``: the windows after it no longer count it either). True when so."""
    if id(entry) in fixed.timed:
        return False
    wide = fixed.spans(entry.time, fixed.margin)
    late = None if len(wide) == 1 else reach(fixed, entry, now)  # (one window: nothing to narrow)
    if late is None:
        return False
    narrow = fixed.spans(entry.time, min(fixed.margin, late))
    if narrow == wide:
        return False
    _date(fixed, entry, min(fixed.margin, late), wide, narrow, counted)
    return True


def _date(fixed: Any, entry: Any, late: float, wide: tuple[int, ...], narrow: tuple[int, ...],
          counted: bool = True) -> None:
    """``entry`` counts only in the windows ``narrow`` of those ``wide`` it counted in, having
    reached the server ``late`` s after its admission at the latest."""
    # (the entry kept: its id is not reused meanwhile)
    fixed.timed[id(entry)] = (entry, late)
    if counted:
        weight = fixed._weight(entry)
        for index in wide:
            if index not in narrow and index in fixed.counts:
                fixed.counts[index] -= weight


def before(fixed: Any, entries: Any, boundary: float) -> None:
    """Ours of ``entries`` admitted within the margin before ``boundary`` count only in the
    windows before it, as what ``fixed``'s window from it served shows they were counted
    (:func:`.apart.straddled`): dated a microsecond (the loop's tick) before it."""
    for entry in entries:
        late = boundary - entry.time - 1e-6
        if 0 <= late < fixed.margin and id(entry) not in fixed.timed:
            wide = fixed.spans(entry.time, fixed.margin)
            narrow = fixed.spans(entry.time, late)
            if narrow != wide:
                _date(fixed, entry, late, wide, narrow)


def forget(fixed: Any, current: int) -> None:
    """Ours timed admitted before the window before ``current``: no window they count in is
    kept any more (``FixedCount.counts``, the current and the next)."""
    fixed.timed = {key: timed for key, timed in fixed.timed.items()
                   if fixed.index(timed[0].time) >= current - 1}


def dated(tracks: Any, entry: Any, now: float) -> None:
    """``entry``'s answer (or 429) read at ``now``: each learned fixed window of ``tracks``
    counts it only in the windows it was counted in (:func:`timed`)."""
    for track in tracks:
        if getattr(track, "fixed", None) is not None:
            timed(track.fixed, entry, now=now)


def taken(tracks: Any, entry: Any, now: float) -> None:
    """``entry``, carried into the current window of a learned fixed window of ``tracks``
    while in flight at its boundary (a server that queues may take it after it:
    :mod:`.crossed`), no longer counts there once its answer read at ``now`` dates its take
    before the boundary (:func:`reach`): counted in the window before only. Carried, the
    first minute's last 2, taken at :58 by a proxy's 4 workers and answered at :60, held the
    next minute 2 short: its last 2 calls went a minute late (1.39x the ideal from :38).
    Called once the reading has taught the shape (the first answer past a boundary may teach
    the clock minute, and carry ``entry`` itself into it)."""
    for fixed in (getattr(track, "fixed", None) for track in tracks):
        if fixed is not None and id(entry) in fixed.carried and took(fixed, entry, now) \
                and fixed.rolled in fixed.counts:
            fixed.counts[fixed.rolled] -= fixed._weight(entry)


def took(fixed: Any, entry: Any, now: float) -> bool:
    """``entry``, carried into ``fixed``'s window ``rolled``, is no longer once its answer
    read by ``now`` dates its take before the window's boundary (:func:`reach`; its count
    there is the caller's to give back): True when so. Read as the answer comes
    (:func:`taken`), or once the count was rebuilt, answered already (:func:`answered`)."""
    late = reach(fixed, entry, now)
    if late is None or entry.time + late >= fixed.boundary(fixed.rolled):
        return False
    del fixed.carried[id(entry)]
    fixed.timed[id(entry)] = (entry, late)  # (its windows: :func:`indices`)
    return True


def answered(fixed: Any, now: float) -> None:
    """Ours carried into ``fixed``'s window whose answers came by ``now`` (read before it was
    rolled: it was rebuilt after its boundary) count there no more once their answers date
    their takes before it (:func:`took`), as :func:`taken` dates them as they come."""
    for entry in [e for e in fixed.carried.values() if e.answered <= now]:
        if took(fixed, entry, now) and fixed.rolled in fixed.counts:
            fixed.counts[fixed.rolled] -= fixed._weight(entry)


def vouched(tracks: Any, now: float, at: float, left: int, limit: int | None) -> int:
    """What the server's reading of ``left`` units (of ``limit``; as of one of ours admitted
    at ``at``) leaves of the current window of each learned fixed window of ``tracks``, whose
    count it bounds (:meth:`.fixed.FixedCount.vouch`): the units of ours answered since its
    boundary whose answers dated their take before it (:func:`timed`, :func:`taken`) given
    back, as far as the server counted more than ours in the window. A proxy that counts
    answers (LiteLLM's: ``remaining`` falls as each ends) counts them in the new minute where
    it admitted them in the last; read as admitted there, 2 taken at :58 and answered at :60
    held the next minute 2 short (1.39x the ideal from :38)."""
    back = None
    for track in tracks:
        fixed = getattr(track, "fixed", None)
        if fixed is None:
            continue
        counted, current = (limit or track.quota.limit) - left, fixed.index(now)
        start = fixed.boundary(current)
        before = sum(fixed._weight(entry) for entry, late in fixed.timed.values()
                     if entry.time + late < start <= entry.answered and entry.live)
        extra = max(0, min(before, counted - fixed.counts.get(current, 0)))
        back = extra if back is None else min(back, extra)
        fixed.vouch(now, at, counted - extra)
    return left + (back or 0)
