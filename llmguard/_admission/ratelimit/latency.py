"""The margin a :class:`RateLimit` counts past each window, measured from the send latency.

A server counts a request when it arrives, a moment after it was admitted here: a request that
took longer on the way than a later one lands closer to it in the server's window than it was
admitted. Counting each admission ``margin`` seconds past the window keeps the server's view
within the quota as long as no request takes longer than that to get there (a cold client's
first ones: connection and TLS set-up, 0.12-0.2 s over loopback).

What is measured: the time from admission to the answer's headers, less the time the server
says it spent on the request (OpenAI's ``openai-processing-ms``, passed on by LiteLLM's proxy
as ``llm_provider-openai-processing-ms``; the proxy's own ``x-litellm-response-duration-ms``):
the round trip, an upper bound on the way there. An answer whose server says nothing of its
own time teaches nothing (its round trip includes the generation, seconds), so against such a
server the margin stays at its start, ``DEFAULT_MARGIN`` per minute of window.

Only the way there matters (how late after counting here the server counts the request), but
a round trip also holds what the server does after its timed part: a loaded proxy writes its
answers late (LiteLLM's, 1,024 in flight: 2-40 s after making them, in order, its duration
header timing only the call), and a margin of that much counted the opening burst as possibly
in the next clock minute, supposing the minute a minute later (a loopback proxy writing 20 s
late: 1.57x the ideal). The headers cannot tell the two apart (a cold burst whose every request
takes 0.8 s reads as a proxy whose every answer waits 0.8 s), but the way there is bounded:
connection set-up and transit, 0.12-0.2 s for a cold client over loopback, under a second over
a slow link. So a sample counts for at most ``CEILING``; beyond it the rest is a wait at the
server, which mostly delays the answer, not the count (a proxy that also queues requests
before counting them counts per clock minute: ours in flight at its boundary are counted in the
new minute too, :mod:`.learn`, whatever the margin).
Nor do the other signals: a proxy writes its headers and body together (no earlier first
byte), the fastest recent trip bounds no other request's way there (the margin must cover the
slowest, a cold burst's; a proxy writing every answer late has no fast trip either), and
``remaining`` places a request in the server's order, not in time.

The margin is the 99th percentile of the samples of the last window (a quantile rather than
the largest: one answer held up by a pause of the client's own loop would otherwise widen every
window for a minute), at least ``FLOOR`` per minute (the burst grouping of header readings,
:mod:`.reading`, and a learned fixed window's boundary, :mod:`.fixed`, rest on it), rounded up
to ``STEP``. Until a sample comes (and again after a window without one) it is the start.
Why not a constant: a server twice as far away needs twice the margin, a near one wastes it.

Everything but :meth:`Margin.observe` takes ``now`` as an argument: tested directly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..._core import clock
from .log import Log
from .window import Quota

__all__ = ["CEILING", "FLOOR", "PROCESSING", "QUANTILE", "STEP", "Margin", "processing_time",
           "retime"]

#: The least measured margin, seconds per minute of window.
FLOOR = 0.05

#: The most a sample counts for, seconds: the longest the way to a server takes (a cold
#: connection's set-up over a slow link). Beyond it a round trip is a wait at the server
#: (a proxy that writes its answers late), which delays the answer, not the count.
CEILING = 2.0

#: The quantile of the recent samples the margin is.
QUANTILE = 0.99

#: Seconds the margin is rounded up to (a new margin is a new tuple of quotas: few of them).
STEP = 0.01

#: Samples kept at most (the newest), whatever the rate.
KEEP = 2048

#: ``(header, seconds per unit)``: the time the server spent on the request, in the order read.
PROCESSING = (("openai-processing-ms", 1e-3), ("llm_provider-openai-processing-ms", 1e-3),
              ("x-litellm-response-duration-ms", 1e-3))


def processing_time(headers: Mapping[str, str]) -> float | None:
    """Seconds the server says it spent on the request (None when it does not say)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, unit in PROCESSING:
        value = get(name)
        if value is not None:
            try:
                seconds = float(value) * unit
            except (TypeError, ValueError):
                continue
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    return None


class Margin:
    """The margin of a layer's quotas: ``given`` seconds (the user's ``margin=``), else
    measured (:meth:`sample`). ``quotas`` are the layer's quotas with the margin in force,
    built (``build_quotas``) with the start's."""

    __slots__ = ("given", "quotas", "seconds", "measured", "way", "_start", "_base",
                 "_samples", "_horizon")

    def __init__(self, quotas: tuple[Quota, ...], given: float | None) -> None:
        #: The user's ``margin=`` (None: measured).
        self.given = given
        #: The quotas with the margin in force (each window ``margin`` seconds longer).
        self.quotas = self._start = quotas
        #: Each quota's server window (without the margin).
        self._base = [q.window - q.margin for q in quotas]
        #: Samples older than this many seconds are forgotten (the longest window).
        self._horizon = max(self._base)
        #: The margin of the longest window now, seconds (a per-minute one's, usually).
        self.seconds = self._start_seconds()
        #: True once the margin in force comes from samples (False: given or the start).
        self.measured = False
        #: The way there the last :meth:`observe` measured, at most ``CEILING`` (None: it
        #: measured none): the request's own, for the bounds drawn from it (:mod:`.holds`).
        self.way: float | None = None
        #: ``(when, seconds)`` of the recent samples, oldest first.
        self._samples: deque[tuple[float, float]] = deque(maxlen=KEEP)

    def _start_seconds(self) -> float:
        return next(q.margin for q, base in zip(self._start, self._base)
                    if base == self._horizon)

    def observe(self, headers: Mapping[str, str], admitted: float) -> bool:
        """An answer's ``headers`` arrived for a request admitted at loop time ``admitted``:
        sample its way there when the server says how long it worked; True when the margin
        changed (``quotas`` is then a new tuple)."""
        self.way = None
        if self.given is not None:
            return False
        worked = processing_time(headers)
        if worked is None:
            return False
        now = clock.now()
        way = max(0.0, now - admitted - worked)
        self.way = min(way, CEILING)  # (beyond it, a wait at the server: see above)
        return self.sample(now, way)

    def sample(self, now: float, seconds: float) -> bool:
        """Record a send latency of ``seconds`` measured at ``now``; True when the margin
        changed."""
        samples = self._samples
        samples.append((now, min(seconds, CEILING)))
        self._forget(now)
        ordered = sorted(s for _, s in samples)
        high = ordered[min(len(ordered) - 1, math.ceil(QUANTILE * len(ordered)) - 1)]
        return self._set(max(self._horizon * FLOOR / 60, math.ceil(high / STEP - 1e-9) * STEP))

    def refresh(self, now: float) -> bool:
        """Forget the samples older than a window; back to the start without any (True when
        the margin changed)."""
        self._forget(now)
        if self._samples or not self.measured:
            return False
        self.quotas, self.seconds, self.measured = self._start, self._start_seconds(), False
        return True

    def _forget(self, now: float) -> None:
        samples, horizon = self._samples, now - self._horizon
        while samples and samples[0][0] < horizon:
            samples.popleft()

    def _set(self, seconds: float) -> bool:
        """Each quota's margin from now on: ``seconds``, at least ``FLOOR`` per minute of its
        window."""
        if self.measured and seconds == self.seconds:
            return False
        self.seconds, self.measured = seconds, True
        self.quotas = tuple(
            Quota(q.limit, base + extra, q.tokens, q.continuous, q.learn, extra, q.part)
            for q, base in zip(self._start, self._base)
            for extra in (max(seconds, base * FLOOR / 60),))
        return True

    def __repr__(self) -> str:
        how = "given" if self.given is not None else "measured" if self.measured else "start"
        return f"{self.seconds:g} s ({how})"


def retime(window: Any, quotas: tuple[Quota, ...], now: float) -> None:
    """``window`` (a ``window.Window`` made for the same quotas with another margin) counts
    with ``quotas``' margins from ``now`` on: its tracks' windows, the spread of its header
    readings' bursts, the margin of a learned fixed window's boundary."""
    before, window.quotas = window.quotas, quotas
    if len(before) != len(quotas) or any(
            (q.limit, q.tokens, q.part, round(q.window - q.margin, 9))
            != (b.limit, b.tokens, b.part, round(b.window - b.margin, 9))
            for q, b in zip(quotas, before)):
        return  # other quotas, not another margin: the window keeps counting its own
    for track, quota in zip(window.tracks, quotas):
        if isinstance(track, Log):
            track.retime(quota)
        else:  # a Bucket or an AutoTrack
            track.retime(now, quota)
    margin = max(q.margin for q in quotas)
    for track in window.tracks[len(quotas):]:  # over a shorter window learned (``short``)
        track.retime(now, replace(track.quota, window=track.window + margin, margin=margin))
    window.readings.spread = max(q.margin for q in quotas)
    if window.shape is not None:
        window.shape.margin = next(q.margin for q in quotas if q.learn)
