"""An output quota's bucket (``RateLimit(output_tpm=)``): unused output given back as far as the
server's bucket can still hold it.

Anthropic charges ``max_tokens`` of output when a request arrives and gives the unused part back
when its answer ends. Ours settles that answer later, sometimes much later (an answer held until
the server is seen giving back, :mod:`.giveback`), and meanwhile the server's bucket may have
been full, its refill on top of the give-back lost. Given back whole then, ours rose above the
server's and the next call was refused. The refund's bound (:func:`.refill.settle`, for what the
server never charged) is safe but holds back what a refill made up for even when the server
lost nothing: 36 of a burst's first answer's 136 unused, the give-back test waiting for room the
server had (a silent gateway from :55 ran 1.11x the ideal at 10x the quota).

The server's bucket loses a give-back only to its size: full when the answer ended at worst, it
has since been charged with no more than ours not settled and what ours settled since the
request was admitted were charged. So ours may rise by the unused part up to the size less
that (``since``), or by the refund's bound, whichever is more: a bucket of its own counting
what settled reservations were charged (``spent``) and that total as each was admitted
(``marks``, by ``seq``).
"""

from __future__ import annotations

from typing import Any

from .auto import AutoTrack
from .bucket import Bucket

__all__ = ["OutputBucket", "OutputTrack"]


class OutputBucket(Bucket):
    """A :class:`.bucket.Bucket` of output tokens: its give-backs bounded by what the server's
    bucket can still hold (the module's doc)."""

    __slots__ = ("spent", "marks")

    def __init__(self, quota: Any) -> None:
        super().__init__(quota)
        #: Units the settled reservations were charged.
        self.spent = 0.0
        #: ``spent`` as each reservation not settled was admitted, by its ``seq``.
        self.marks: dict[int, float] = {}

    def add(self, now: float, entry: Any) -> None:
        super().add(now, entry)
        self.mark(entry)

    def mark(self, entry: Any) -> None:
        """``entry`` was admitted (taken): what was spent by then, for its give-back."""
        self.marks[entry.seq] = self.spent

    def settled(self, now: float, entry: Any, reserved: int, actual: int | None,
                since: float | None = None) -> None:
        """As :meth:`.bucket.Bucket.settled`; an answer that used less than ``reserved``
        gives back with ``since``: every reservation of ours not settled (this one aside) and
        what those settled since it was admitted were charged."""
        mark = self.marks.pop(entry.seq, None)
        if actual is not None:
            if mark is not None and actual < reserved:
                since = self.outstanding - reserved + self.spent - mark
            self.spent += actual
        super().settled(now, entry, reserved, actual, since)


class OutputTrack(AutoTrack):
    """A learned output quota's track: an :class:`OutputBucket` alongside its log."""

    __slots__ = ()
    bucket_type = OutputBucket

    def add(self, now: float, entry: Any) -> None:
        super().add(now, entry)
        self.bucket.mark(entry)  # type: ignore[attr-defined]
