"""What the server counted of ours and of the other processes sharing a quota, for learning
the server's shape (:mod:`.learn`).

A server counts every process's requests: LiteLLM's proxy's ``remaining`` after a clock minute
falls with the answers of all of them. The readings :mod:`.learn` weighs against our own
admissions (the requests since a supposed boundary, those that crossed it, those answered
within a window) would then be read against a part of what the server counted, and a fixed
window refuted as sliding (``learn._fresh``). A shared backend (Redis) keeps, in the window
that learns, the other processes' admissions while a shape is being learned: when each was
admitted and when its call ended, as this process's own :class:`.log.Entry`\\ s record them.
In memory there are no others (``Shape.others`` is None).

Everything here takes ``now`` as an argument (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .log import Entry

__all__ = ["Others", "ours", "sent_by", "theirs"]


class Others:
    """The other processes' admissions of one key, by their id, oldest first; ``cursor`` is
    the backend's mark of how far it has read them (None: nothing read yet)."""

    __slots__ = ("entries", "cursor")

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.cursor: str | None = None

    def admitted(self, name: str, time: float, tokens: int, refused: bool) -> None:
        """Another process admitted ``name`` at ``time`` (loop time) for ``tokens``."""
        entry = Entry(time, tokens)
        entry.refused = refused
        self.entries[name] = entry

    def ended(self, name: str, time: float) -> None:
        """The call of ``name`` ended at ``time`` (answered: the server counted it by then)."""
        entry = self.entries.get(name)
        if entry is not None:
            entry.answered = min(entry.answered, time)

    def forget(self, before: float) -> None:
        """Drop the admissions made before ``before`` (no window of the server holds them):
        the oldest first, as they were read (once per reservation: no pass over the rest)."""
        entries = self.entries
        while entries:
            name = next(iter(entries))
            if entries[name].time >= before:
                break
            del entries[name]

    def units(self, weight: Callable[[Entry], int], keep: Callable[[Entry], bool]) -> int:
        """Units (``weight``) of those for which ``keep(entry)`` holds, refused ones (the
        server counted none of them) left out."""
        return sum(weight(e) for e in self.entries.values() if not e.refused and keep(e))

    def latest(self) -> float | None:
        """When the last of them was admitted (None: none): the last read."""
        return next(reversed(self.entries.values())).time if self.entries else None

    def __repr__(self) -> str:
        return f"<Others {len(self.entries)} admissions>"


def theirs(window: Any, track: Any, keep: Callable[[Entry], bool]) -> int:
    """Units of ``track``'s quota the other processes sharing ``window``'s key admitted, for
    which ``keep(entry)`` holds (0 in memory: no others)."""
    others = window.shape.others
    return 0 if others is None else others.units(track.weight, keep)


def ours(track: Any, keep: Callable[[Entry], bool]) -> int:
    """Units of ours in ``track``'s recent admissions for which ``keep(entry)`` holds, those
    refunded (never sent) or refused (the server counts none of them) left out."""
    return sum(track.weight(entry) for entry in track.recent
               if entry.live and not entry.refused and keep(entry))


def sent_by(window: Any, track: Any, ticket: Entry) -> int:
    """Units of ours in ``track``'s log admitted up to ``ticket`` (what the server counted of
    ours when it answered it; refused ones left out, as the server counts none of them), and
    of the other processes' within the log's span before it."""
    span = ticket.time - track.log.span
    sent = theirs(window, track, lambda e: span < e.time <= ticket.time)
    for entry in track.log.entries:
        if entry.seq > ticket.seq:
            break
        if not entry.refused:
            sent += track.weight(entry)
    return sent
