"""Probing what a server that says nothing charges against a token quota (``refill="auto"``,
:mod:`.charge`'s ``silent`` state), one request at a time.

A server whose answers carry no token readings may keep ``max_tokens`` charged (OpenAI does)
or count the usage, at our estimate or 11% over it. What was reserved stays counted, and when
the token quota holds a request back it goes anyway as a probe, one at a time: admitted, the
server counted ours in its window, the probe included, at most at the quota, and the factor
comes down to that; still admitted with ours counted at their estimates, the server counts
less than the estimate and is trusted to count the usage from then on (``trusted``: factor 1,
unused tokens given back). A probe refused on tokens calibrates the factor from the other
side and ends probing (:meth:`.charge.Charge.refused`). Probes go one at a time so that no
more than one request is refused while the server's charge is learned: trusting the usage
at once sent the room it freed in one burst into a server still counting the opening
burst's ``max_tokens`` (18 429s of 126).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ours", "probe", "probes", "recount"]


def probes(charge: Any, window: Any, now: float) -> bool:
    """True when ``window`` may send a probe now (:func:`probe`): a silent server not yet
    read, no probe in flight, nothing but the token quotas holding a request back."""
    if not charge.silent or charge.trusted or window.paused_until > now:
        return False
    last = charge.probing
    if last is not None and last.live and last.answered > now and not last.refused:
        return False
    if any(cap[1] > now for cap in window.caps.values()):
        return False
    return all(track.fits(now, 1) for track in window.tracks if not track.quota.tokens)


def probe(charge: Any, window: Any, now: float, estimate: int) -> Any:
    """Admit a request estimated at ``estimate`` that ``window``'s token quotas hold back
    (after :func:`probes` said one may go), as the probe of what the server counts: the
    last probe, admitted, first brings the factor down (:func:`_probed`). Its entry."""
    last, charge.probing = charge.probing, None
    if last is not None and last.live and not last.refused:
        _probed(charge, window, now, last)
    tokens = charge.units(estimate)
    held = not all(t.fits(now, tokens) for t in window.tracks if t.quota.tokens)
    entry = window.add(now, tokens, estimate)
    if held and not charge.trusted:
        charge.probing = entry
    return entry


def _probed(charge: Any, window: Any, now: float, probe: Any) -> None:
    """The server admitted ``probe``: it counted ours in its window up to it at most at
    the token quota."""
    entries = ours(window)
    counted = [e for e in entries if e.seq <= probe.seq]
    estimated = sum(e.estimate for e in counted)
    limit = min(t.limit for t in window.tracks if t.quota.tokens)
    if estimated <= 0:
        return
    factor = (limit - len(counted)) / estimated
    if factor < 1.0:  # less than the estimate: it counts the usage (or less)
        charge.trusted, factor = True, 1.0
    if factor < charge.factor:
        charge.factor = factor
        recount(window, now, charge, entries)


def ours(window: Any) -> list[Any]:
    """Ours in ``window``'s log the server may count: admitted, not refunded nor refused."""
    track = window.tracks[0]
    return [e for e in getattr(getattr(track, "log", track), "entries", ())
            if e.live and not e.refused]


def recount(window: Any, now: float, charge: Any, entries: list[Any]) -> None:
    """Count ``entries`` at what ``charge`` says the server charged them, settled or not."""
    for entry in entries:
        charged = charge.units(entry.estimate)
        if charged == entry.tokens:
            continue
        for each in window.tracks:
            if not each.quota.tokens:
                continue
            again = getattr(each, "recount", None)  # a learned quota's pacers
            if again is not None:
                again(now, entry, charged)
            elif not hasattr(each, "rescale"):  # a log
                each.adjust(now, entry, charged, entry.live)
            elif entry.owner is window:  # a bucket settles once: only what is outstanding
                each.rescale(now, entry, charged)
        entry.tokens = charged
