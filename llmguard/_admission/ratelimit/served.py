"""When a probe of the charge in flight counts as served (:mod:`.probing`): a silent server
refuses a request as it arrives, so no 429 within a few round trips tells as much as its
answer, once a 429 to the next one would tell what its answer would.

Asked several times an admission while a probe flies, the passes over ours within two windows
(:func:`refuting`, :func:`answering`) are kept while nothing they read changed
(:mod:`.changed`). Everything here takes its times from its arguments: tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from . import bounds, changed
from .bounds import logged

__all__ = ["QUIET", "answering", "refuting", "served_at"]

#: Round trips after which a probe still in flight and not refused counts as served: a
#: server counts a request as it arrives and refuses it then, so a 429 comes back within a
#: round trip (the margin is measured from them, :mod:`.latency`), twice for safety. Waiting
#: for its answer instead (seconds: the generation), the probes started at :55 filled 42
#: of a minute's 47 before the minute ended (a fixed window charging our estimate: 1.90x).
QUIET = 2.0


def served_at(window: Any, probe: Any) -> float:
    """When ``probe``, in flight, counts as served: ``QUIET`` round trips (the margin,
    measured from them) after it went, with no 429, once a 429 to the next one would refute
    every token bucket the probes allow (:func:`refuting`; near the end of the clock minute,
    when its answer would come too late for one more probe within it, whatever a 429 would
    show); else at its answer (inf here: in flight), as while it waits in an inner queue and
    on a learned bucket, which has no minute to lose. Each probe an answer apart (2 s), one
    started at :55 filled 42 of a fixed window's 47 before the minute ended (1.90x the ideal,
    charging our estimate); started at :00, the minutes after the first repeated their
    spacing in the sliding log (1.12x; 1.09x now). Going two round trips apart all along,
    one refused soon after the opening burst was as well a token bucket's charging the
    factor as a window's charging less: kept at 1.15x, a strict fixed window from :00 took 40
    a minute of 42 (1.49x); refuting only a bucket charging the factor (``unrefilled``), one
    charging a little more, within what the probes allow, was left: a strict mute sliding
    window from :00 was probed for its shape too (a second 429)."""
    shape = window.shape
    if probe.queued or shape is None or shape.kind == "bucket":
        return math.inf
    margin, span = max(q.margin for q in window.quotas), shape.window
    at = probe.time + QUIET * margin
    end = probe.time - (probe.time + shape.offset) % span + span
    track = bounds.bucket_of(window)
    if track is None or probe.time + answering(window) >= end - margin:
        return at
    return max(at, refuting(window, track, probe))


def refuting(window: Any, track: Any, probe: Any) -> float:
    """When a 429 to one more of ours, estimated as ``probe``, refutes every token bucket
    (of ``track``'s quota) that served the probes (:func:`.refuted.bucketless`): such a
    bucket, charging at most ``Charge.ceiling`` over our estimates, refilled enough since
    each of ours for ours since and it, ours arriving a margin late (inf: no probe served
    bounds it yet)."""
    ceiling = window.charge.ceiling
    if not math.isfinite(ceiling):
        return math.inf
    limit, recent = track.limit, track.recent  # (asked several times an admission while a
    rate, margin = limit / track.window, track.quota.margin  # probe flies: kept, hoisted)
    key = (track, probe, ceiling, limit, rate, margin, changed.counted)
    at = changed.kept(window, "refuting", recent, key)
    if at is not None:
        return at
    at, estimated = -math.inf, probe.estimate
    for entry in reversed(recent):
        if entry.live and not entry.refused:
            estimated += entry.estimate
            bound = entry.time + (ceiling * estimated - limit) / rate
            if bound > at:
                at = bound
    return changed.keep(window, "refuting", recent, key, at + margin)


def answering(window: Any) -> float:
    """Seconds the last of ours answered took from its send to its answer (0: none yet)."""
    entries = logged(window)
    key = (changed.counted, changed.answered)  # (asked with :func:`refuting`: kept too)
    took = changed.kept(window, "answering", entries, key)
    if took is not None:
        return took
    last, answered = None, -math.inf  # (``max`` over ``ours(window)`` by ``answered``,
    for entry in entries:  # written out: the first of the latest, as ``max`` takes)
        if answered < entry.answered < math.inf and entry.live and not entry.refused:
            last, answered = entry, entry.answered
    took = 0.0 if last is None else answered - last.time
    return changed.keep(window, "answering", entries, key, took)
