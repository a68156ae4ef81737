"""How high a bucket's give-back may go: no higher than the server's last reading allows.

An answer that used less than it reserved settles to its usage (:func:`.bucket.settle`), but
OpenAI charges ``max_tokens`` up front and gives nothing back, and only its readings of
``remaining`` say which kind of server it is. Given back after the answer's own reading had
drained us, the unused part put us above the server, and the call woken next was refused (5%
429s at 3,000 RPM with answers 0.05 s away and 32-64 calls in flight; 39% at 150,000 TPM).

So a reading as of its ticket's arrival (:mod:`.reading`) also sets a **ceiling**: what it
reports, refilled since the ticket arrived, less every reservation of ours not settled that it
counted as arrived (ours admitted before the ones it took off as on the way). Ours queued
below, a ConcurrencyLimit's, were admitted before the request it answers but are not at the
server yet: counted as arrived, they cost as many 429s. Since the reading, ours taken lower the
ceiling; a refund (the server never counted it), a reservation rescaled down, or one the
reading counted and took off settling, raises it. It is never above what the server holds for
us, however it counts; a server that does give unused units back says so in its next
readings, which raise it again. A reading as of now (Anthropic's dates) sets none: ours queued
below cannot be told from ours sent.

The same reading **lifts** a learned bucket (the server's own) to what it leaves, less the same
reservations: our count errs only low, and lowered only it stayed low (:func:`lift`).

The ceiling's state is the bucket's (``told``, ``told_at``, ``since_told``, ``told_seq``: set by
:meth:`.bucket.Bucket.drain_to`, kept by its ``add``, ``rescale`` and :func:`settled`).
Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ceiling", "drain", "lift", "settled", "unsettled"]


def unsettled(bucket: Any, log: Any, first: int, queued: int = 0) -> float:
    """Units of ``bucket``'s reservations not settled that were admitted before seq ``first``
    (a reading took off those from ``first`` on as not counted yet, and ``queued`` units of
    ours queued below, whenever admitted: :mod:`.queued`): all of them but those when ``log``
    (the quota's sliding log, or None) no longer holds ``first``."""
    entries = getattr(log, "entries", None)
    if not entries or entries[0].seq > first:
        return bucket.outstanding - queued
    later = 0
    for entry in reversed(entries):
        if entry.seq < first:
            break
        if entry.owner is not None and entry.live and not entry.queued:
            later += bucket.weight(entry)
    return bucket.outstanding - later - queued


def drain(track: Any, now: float, left: float, since: float, ticket: Any, first: int,
          spread: float, size: int | None = None, queued: int = 0) -> None:
    """A reading in the answer to ``ticket`` (None: as of now) leaves ``left`` as of ``since``,
    ours from seq ``first`` on and ``queued`` units of ours queued below taken off
    (:mod:`.reading`): ``track``'s bucket (a learned
    quota's, or the track itself) drains to it and, as of ``ticket``'s arrival (within
    ``spread`` s of its send), takes its ceiling from it; a learned one, the server's own
    bucket of ``size`` units, is lifted to it too (:func:`lift`)."""
    bucket = getattr(track, "bucket", track)
    if bucket.exact:  # a limit lowered below what is outstanding: the reading sets the level
        return bucket.read(now, left, since)
    told = None if ticket is None else (
        unsettled(bucket, getattr(track, "log", None), first, queued), first,
        ticket.time + spread)
    bucket.drain_to(now, left, since, told)
    if told is not None and size and bucket is not track:
        lift(bucket, now, left, since, told[0], size)


def lift(bucket: Any, now: float, remaining: float, since: float, unsettled: float,
         size: int) -> None:
    """Hold no less in ``bucket`` (a learned one: the server's own, of ``size`` units) than a
    reading's bound of ``remaining`` as of ``since`` (its refill since comes on top, at our
    rate: no faster than the server's) leaves: less what the server holds beyond our limit (a
    share of its quota) and ``unsettled``, ours not settled that it counted as arrived (some
    may be queued below us, not sent: lifted to the bare reading, 55 429s of 1,500 at 3,000
    RPM under ConcurrencyLimit(32)). Our count errs only low (an opening reserved at more
    than the server charged, a shuffled burst read at its worst, the refill during an
    answer's latency left out); lowered only, such an error stuck until the bucket was full
    again, which a saturated run never is (141 calls at 1.08x the server's ideal time, 3,000
    RPM at 300,000 TPM 1.11x)."""
    bucket.available(now)  # (refilled to now)
    level = bucket.level
    if since < now:
        remaining += (now - since) * bucket.rate
    lifted = min(float(size), remaining) - max(0, size - bucket.limit) - unsettled
    if lifted > level:
        bucket.level = lifted
        if bucket.deficit > bucket.limit - lifted:  # (as a refill to it would)
            bucket.deficit = bucket.limit - lifted


def ceiling(bucket: Any, now: float) -> float:
    """The most a give-back may lift ``bucket`` to now (inf before any reading): the reading's
    level refilled since (clipped at the end only: never more than the server's), less ours
    taken since."""
    level = bucket.told + (now - bucket.told_at) * bucket.rate
    return (level if level < bucket.limit else bucket.limit) - bucket.since_told


def settled(bucket: Any, now: float, entry: Any, reserved: float, before: float, after: float,
            refund: bool) -> float:
    """``bucket``'s level after settling ``entry`` (``reserved`` units) took it from ``before``
    to ``after``. A refund (the server never counted it), or one the last reading counted and
    took off as not settled, raises the ceiling by ``reserved``; an answer's unused part lifts
    the level only up to the ceiling (the server may keep it charged)."""
    if refund or entry.seq < bucket.told_seq:
        bucket.since_told -= reserved
    if refund or after <= before or bucket.told == math.inf:
        return after
    most = ceiling(bucket, now)
    return after if after <= most else (before if before > most else most)
