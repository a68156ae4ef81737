"""What a 429 teaches about the limit a :class:`.window.Window` (``refill="auto"``) paces to:
which quota ran out, and what the server admits of it.

* **Which quota.** The one the 429's message names (:mod:`.named`: OpenAI's "on tokens per
  min (TPM)", Anthropic's "input tokens per minute", Azure's "token rate limit"); when it names
  none, the one nearest its limit by our own counts. Our counts can mislead: a server that
  charges more tokens than our estimate refuses on tokens while the requests quota looks
  fuller, and learning "the server admits 56 requests" then caps the wrong quota and leaves
  the token one to overshoot again in the next window.
* **What it admits.** A limit the message gives (``Limit 10000``) is the server's. Else the
  server admitted what we had counted in its window: a 429 at the 60th request of a minute
  means it admits 59, when that is near the quota (farther, the refusal is not ours alone).
* **Tokens while the charge is a guess.** Before any answer has reported tokens
  (:mod:`.charge`: ``opening``, or ``silent`` when answers come without readings) our token
  count is our estimate scaled by a factor nobody measured. A refusal on tokens then measures
  it: the server counted ours admitted before the refused one, at least the quota's worth, so
  their estimates times ``limit / estimates`` is what it charges
  (:meth:`.charge.Charge.refused`), kept from then on (nothing given back, as OpenAI does).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

from . import answers, deferred, repeat
from .auto import AutoTrack
from .log import Entry
from .others import ours
from .shape import TOLERANCE

#: Seconds to pause admissions after a 429 that carries no Retry-After (OpenAI and Anthropic
#: send one almost always; when absent, one second lets a per-second quota refill without
#: idling a per-minute one for long).
DEFAULT_PAUSE = 1.0

__all__ = ["DEFAULT_PAUSE", "before", "clock_minute", "explained", "kept_why", "learn_limit",
           "near", "queued", "reset_of"]


def before(window: Any, track: AutoTrack, now: float, ticket: Entry | None) -> int:
    """Units of ours the server had seen in its window when ``ticket`` reached it: what
    ``track`` counts now, less ours admitted after it (the server saw them after it, or never).
    A 429 reads against the refused request's place: counted at its answer, a random 429 to
    the third of a minute's burst, its 55 others admitted at the same instant, read as "the
    server admits 57", and the minute was held as full (58 s idle a minute). Unless the
    server's own word (a cap read from its headers, ours since counted against it) leaves no
    room: ours admitted with it may have reached it first (LiteLLM's proxy refused the 60th to
    arrive, admitted with 23 after it), and that word may count more than our log (ours it
    took late, the log let go: :func:`.answers.full`). A bucket's level (refilled since,
    settled since) is not ours by place: as counted now."""
    used = track.used(now, ticket)
    cap = window.caps.get(track.quota.tokens)
    if ticket is None or track._pacer() is track.bucket:
        return used
    if cap is not None and cap[1] > now and cap[0] <= 0:
        return max(used, answers.full(window, cap, track, ticket))
    for entry in reversed(track.log.entries):  # the newest first: ours after it are recent
        if entry.seq <= ticket.seq:
            break
        used -= track.weight(entry)
    return used - queued(track, ticket)


def queued(track: AutoTrack, ticket: Entry) -> int:
    """Units of ours before ``ticket`` still queued below us (ConcurrencyLimit's, marked so:
    :mod:`.queued`): not at the server. Counted, a random 429 under 10x demand read the queued
    reservations as seen ("the server admits 568" with 129 sent), and the calls holding the
    inner slots waited for room the queued ones held: 28 s with nothing sent."""
    units = 0
    for entry in reversed(track.log.entries):
        if entry.queued and entry.seq < ticket.seq:
            units += track.weight(entry)
    return units


def near(limit: int) -> int:
    """How far under ``limit`` ours may come and still be what a 429 refused: a tenth (two at
    least). Farther, the refusal is not ours alone, and teaches no limit."""
    return max(2, limit // 10)


def explained(window: Any, now: float, ticket: Entry | None) -> bool:
    """True when ours the server had seen before ``ticket`` and it come near a limit in force
    (within a tenth, as :func:`learn_limit` reads one): the 429 may say the window is full.
    Else it was not ours: the server's own pause is all it asks."""
    if ticket is None:
        return True
    for track in window.tracks:
        if isinstance(track, AutoTrack) and track.learns():
            need = ticket.tokens if track.quota.tokens else 1
            if before(window, track, now, ticket) + need > track.limit - near(track.limit):
                return True
    return False


def learn_limit(window: Any, now: float, ticket: Entry | None, named: Any = None,
                pause: tuple[float, bool] = (math.inf, True),
                sure: bool = False, stray: bool = False,
                measures: bool = True) -> AutoTrack | None:
    """The 429 to ``ticket`` (``named``: the quota its message names, a ``named.Named``, or
    None) teaches ``window`` the limit its server admits, if it asked a pause that says so
    (``pause``: when it ends, and True when it asked none). The track of the quota that ran
    out (None: none known, or a daily one). A lower limit with a pause short of a learned
    fixed window's boundary, and from a server that has said nothing a lower limit or a
    factor from ours far under the limit as counted, only once a second 429 at that count
    confirms it (:mod:`.repeat`), unless ``sure`` (it asked for longer than a bucket
    refills); a factor near the limit too when ``stray`` (no shape's refusal:
    :func:`.learn_refusal._stray`); none at all unless it ``measures`` one."""
    learners = [t for t in window.tracks if isinstance(t, AutoTrack) and t.learns()]
    if named is not None:
        if not named.minute:
            return None  # a daily quota ran out: nothing about the per-minute ones
        learners = _of(learners, named)
        if named.limit is not None and learners and named.limit < min(t.limit for t in learners):
            for track in learners:
                track.set_limit(now, named.limit)
            window.shape.limits = f"; a 429 said the limit is {named.limit} {named.unit}"
            return None
    fullest, ratio, used, needed = None, 0.0, 0, 0
    for track in learners:
        mine = before(window, track, now, ticket)
        need = (ticket.tokens if track.quota.tokens else 1) if ticket is not None else 0
        if (mine + need) / track.limit > ratio:
            fullest, ratio, used, needed = track, (mine + need) / track.limit, mine, need
    if fullest is None:
        return None
    charge = window.charge
    if fullest.quota.tokens and charge is not None and not charge.heard and ticket is not None:
        if window.shape.quiet is not False and (charge.kept or not measures or (
                not sure and (stray or used + needed <= fullest.limit - near(fullest.limit))
                and not repeat.heard(window, fullest, "factor", used, ticket, now,
                                     until=pause[0]))):
            # measured by a 429 already (a stray one, the server's own overload, ratcheted it
            # from 1.15x to 3x in 15 minutes, paced at a third), or ours far under the limit
            # as counted (a stray 429 to the 9th of a burst read as 3x)
            return fullest
        if charge.refused(window, now, ticket, min(t.limit for t in learners
                                                   if t.quota.tokens is fullest.quota.tokens)):
            window.shape.limits = kept_why(charge)
        return fullest
    configured = fullest.quota.limit
    # ours and the refused one over the limit in force: the limit itself explains the 429 (a
    # token one sent as a bucket's refill allowed, its server counting per window: read as
    # "the server admits 2,824" of 3,000, 42 calls a minute where it admits 44)
    if used + needed > fullest.limit or used < configured - near(configured):
        if ticket is not None and used + needed <= fullest.limit:  # ours sent with it: their
            deferred.defer(window, fullest, ticket, used, needed, pause, sure,  # answers
                           near(configured))  # tell its place (:mod:`.deferred`)
        return fullest  # nothing lower, or not near the quota (or not ours alone)
    # a learned fixed window's short pause, a silent server's 429: learned once repeated
    # (under a saturated pace every stray 429 comes near the limit)
    if not repeat.limit(window, fullest, now, ticket, used, pause, sure):
        return fullest
    for track in learners:
        if track.quota.tokens is fullest.quota.tokens:
            track.set_limit(now, used)
    unit = "tokens" if fullest.quota.tokens else "requests"
    window.shape.limits = f"; a 429 after {used} {unit} in the window: the server admits {used}"
    return fullest


def kept_why(charge: Any) -> str:
    """What ``window.shape.limits`` says of a factor a 429 on tokens measured (``kept``)."""
    return f"; a 429 on tokens: the server charges {charge.factor:.3g}x our estimate, and keeps it"


def reset_of(now: float, track: AutoTrack | None, ticket: Entry | None,
             seconds: float) -> str | None:
    """Why a 429 asking for ``seconds`` (the quota of ``track`` ran out; no header read)
    shows a fixed window starting afresh when the pause ends, else None. Its count was ours
    alone (ours in the window and the refused request exceed the limit), so a sliding window
    would admit again only when our oldest request leaves it, a bucket once it refilled the
    request: a pause that ends before the one and after the other is a fixed window's
    boundary. A pause of a window or more (LiteLLM's constant 60) says nothing."""
    if track is None or ticket is None or seconds >= track.window - TOLERANCE:
        return None
    need = ticket.tokens if track.quota.tokens else 1
    # against the quota as given: a limit learned from this 429 supposes ours alone
    if seconds <= need * track.window / track.limit + TOLERANCE \
            or track.used(now, ticket) + need <= track.quota.limit:
        return None
    oldest = min((e.time for e in track.log.entries if e.live and not e.refused), default=None)
    if oldest is None or now + seconds >= oldest + track.window - TOLERANCE:
        return None
    return (f"a 429 asked for {seconds:g} s, before our oldest request leaves the window, ours "
            "alone filling it: a fixed window starting afresh then")


def clock_minute(window: Any, now: float, ticket: Entry | None, seconds: float,
                 boundary: float) -> str | None:
    """Why a 429 to ``ticket`` asking for ``seconds`` shows a fixed clock minute ending at
    ``boundary`` (the wall clock's next minute), else None: the pause ends at the minute (to
    the second a ``Retry-After`` rounds to) and ours admitted in the minute before it fill a
    quota with the refused one. Read only while the quotas are paced as the buckets assumed
    for input and output tokens (:mod:`.shape`), for which a 429 at all is news: such a
    bucket, as we count it, had room (a gateway counting per minute refused the 16th call of
    a minute at :55 with 4.4 s to wait, less than a bucket's refill of it with the rounding
    allowed; read as a bucket's, "the server admits 2,800" paced 14 a minute of its 15)."""
    shape = window.shape
    if ticket is None or shape.kind != "unknown" or not shape.assumed \
            or abs(now + seconds - boundary) > 1.0:
        return None
    start = boundary - shape.window
    for track in window.tracks:  # (the refused one is not among ours the server counted)
        if isinstance(track, AutoTrack) and track.learns() and ours(
                track, lambda e: start <= e.time) + track.weight(ticket) > track.limit:
            return (f"a 429 asked for {seconds:g} s, to the clock minute, ours in the minute "
                    "before it filling it: a fixed window starting afresh at each minute")
    return None


def _of(learners: list[AutoTrack], named: Any) -> list[AutoTrack]:
    """The tracks of the quota ``named``: its unit (and part of the tokens: a window with
    input or output quotas keeps the others out; one without counts them in its tokens)."""
    tracks = [t for t in learners if t.quota.tokens is named.tokens]
    if named.tokens and named.part:
        parted = [t for t in tracks if t.quota.part == named.part]
        return parted if parted or any(t.quota.part for t in learners) else tracks
    return [t for t in tracks if not t.quota.part]
