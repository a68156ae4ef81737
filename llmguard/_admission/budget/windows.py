"""Calendar windows in UTC: which window a moment falls in, its label and when it ends.

Pure functions of a Unix time, so every process (sharing a ledger in Redis) that agrees on the
time agrees on the window without asking anyone, and tests pass the time they want.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["PERIODS", "check_per", "window"]

#: The windows a Budget can reset on (``per=``); None is a total that never resets.
PERIODS = ("minute", "hour", "day", "month")


def check_per(per: object) -> str | None:
    """Return ``per`` if it is one of :data:`PERIODS` or None; else raise naming it."""
    if per is not None and per not in PERIODS:
        raise ValueError(f"per must be one of {', '.join(map(repr, PERIODS))} (a calendar "
                         f"window in UTC) or None for a total that never resets, got {per!r}")
    return per


def window(per: str | None, now: float) -> tuple[str, float | None]:
    """``(label, end)``: the label of the UTC calendar window holding Unix time ``now``
    (``"2026-12-06T10:45Z"``, ``"2026-12-06T10Z"``, ``"2026-12-06"``, ``"2026-12"``, or
    ``"total"``) and the Unix time it ends (None for a total)."""
    if per is None:
        return "total", None
    at = datetime.fromtimestamp(now, UTC)
    if per == "minute":
        start = at.replace(second=0, microsecond=0)
        return start.strftime("%Y-%m-%dT%H:%MZ"), (start + timedelta(minutes=1)).timestamp()
    if per == "hour":
        start = at.replace(minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%dT%HZ"), (start + timedelta(hours=1)).timestamp()
    if per == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp()
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = start.replace(year=start.year + 1, month=1) if start.month == 12 else \
        start.replace(month=start.month + 1)
    return start.strftime("%Y-%m"), following.timestamp()
