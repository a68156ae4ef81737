"""A request quota and a token quota over one window, sharing a log: ``rpm`` and ``tpm``.

Both see the same admissions leave at the same instants, so the token quota's track reads the
request quota's sliding log and history (:class:`.log.Log`'s sharing: one deque entry a call,
not two) and what :class:`.window.Window` does for every call it does for both in one frame:
the room check, the admission (one append, one fold check, one history trim: the first
track's, then each quota's total and bucket) and the settlement. Each step gives what the two
tracks' own methods give in turn (tested against them, what the server's readings told the
buckets included): each bucket takes and settles through its own :meth:`.bucket.Bucket.take`
and :meth:`.bucket.Bucket.settled`, the one copy of that bookkeeping; a shape learned beyond
the log's (a bucket, a fixed window, a silent server's probes), a folded entry or one that
left the window goes through the tracks' own methods.

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

from .auto import AutoTrack
from .bucket import Bucket
from .log import Entry, Log
from .output import OutputBucket, OutputTrack

__all__ = ["Pair", "pairs", "tracks"]


class Pair:
    """The tracks ``first`` (requests) and ``second`` (tokens, sharing its log) of one window,
    in the window's hot loops (``Window.pace``) in their place."""

    __slots__ = ("first", "second", "shape")

    def __init__(self, first: AutoTrack, second: AutoTrack) -> None:
        self.first, self.second = first, second
        self.shape = first.shape

    def fits(self, now: float, tokens: int) -> bool:
        """``first.fits(now, tokens) and second.fits(now, tokens)``."""
        shape = self.shape
        kind = shape.kind
        if kind == "bucket" or kind == "fixed" or shape.served or shape.assumed:
            return self.first.fits(now, tokens) and self.second.fits(now, tokens)
        log = self.first.log  # both paced by the shared log (``AutoTrack.fits``'s first case)
        entries = log.entries
        if entries and entries[0].time <= now - log.span:
            log.expire(now)  # off both totals
        if log.used + 1 > log.limit:
            return False
        other = self.second.log
        return other.used + tokens <= other.limit

    def add(self, now: float, entry: Entry) -> None:
        """``first.add(now, entry)`` (the shared log's append, fold and history trim, each
        track's carry) then ``second.add(now, entry)``, written out: its total and bucket."""
        self.first.add(now, entry)
        second = self.second
        units = entry.tokens
        second.log.used += units
        second.bucket.take(now, units)
        if second.fixed is not None:
            second.fixed.add(now, entry)

    def adjust(self, now: float, entry: Entry, tokens: int, live: int) -> None:
        """``first.adjust(now, entry, tokens, live)`` then ``second``'s, written out for an
        entry still unfolded in the window (every settled call)."""
        first = self.first
        log = first.log
        if entry.time // log.slot < log.cut or entry.time <= now - log.span:
            first.adjust(now, entry, tokens, live)  # folded, or left the window
            self.second.adjust(now, entry, tokens, live)
            return
        entries = log.entries
        if entries and entries[0].time <= now - log.span:
            log.expire(now)  # first, so an expiring entry leaves with the weight it counted
        second = self.second
        first.log.used += live - entry.live
        second.log.used += tokens - entry.tokens
        first.bucket.settled(now, entry, entry.live, 1 if live else None)
        second.bucket.settled(now, entry, entry.tokens, tokens if live else None)
        if first.fixed is not None:
            first.fixed.adjust(entry, tokens, live)
        if second.fixed is not None:
            second.fixed.adjust(entry, tokens, live)


def tracks(quotas: tuple[Any, ...], shape: Any) -> tuple[Any, ...]:
    """A window's track of each quota: an :class:`AutoTrack` (learned, of ``shape``), a
    :class:`.bucket.Bucket` or a :class:`.log.Log` (an output quota's two bound its
    give-backs: :mod:`.output`); a token quota right after a request quota of the same window
    (``rpm``, ``tpm``) shares its log."""
    made: list[Any] = []
    for quota in quotas:
        share = made[-1] if made and _shares(made[-1], quota) else None
        output = quota.part == "output"
        made.append((OutputTrack if output else AutoTrack)(quota, shape, share) if quota.learn
                    else (OutputBucket if output else Bucket)(quota) if quota.continuous
                    else Log(quota, share))
    return tuple(made)


def _shares(track: Any, quota: Any) -> bool:
    """True when ``quota``'s track may share ``track``'s log: tokens after requests, over one
    window, paced alike (both learned, or both sliding logs)."""
    first = track.quota
    return (not first.tokens and quota.tokens and not first.part and not quota.part
            and first.window == quota.window and first.margin == quota.margin
            and ((first.learn and quota.learn and type(track) is AutoTrack)
                 or (not first.learn and not first.continuous and not quota.learn
                     and not quota.continuous and type(track) is Log)))


def pairs(tracks: tuple[Any, ...]) -> tuple[Any, ...]:
    """``tracks`` for the hot loops: a track sharing the log of the one before it (the
    ``peer`` its ``Window`` built) goes with it as one :class:`Pair`."""
    pace: list[Any] = []
    for track in tracks:
        if (type(track) is AutoTrack and track.peer is not None and pace
                and pace[-1] is track.peer and not track.log.lead):
            pace[-1] = Pair(pace[-1], track)
        else:
            pace.append(track)
    return tuple(pace)

