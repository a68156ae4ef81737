"""The arithmetic of a continuously refilling bucket (:mod:`.bucket`): its level later on, the
wait until it holds some units, and a reservation settled (a refund given back only as far as
the provider's bucket is surely above ours: ``deficit``).

Pure functions of numbers: tested directly.
"""

from __future__ import annotations

__all__ = ["level_at", "settle", "wait_for"]


def level_at(level: float, since: float, now: float, capacity: float, rate: float) -> float:
    """The level of a bucket that held ``level`` at ``since``, refilled at ``rate`` per second up
    to ``capacity``, at ``now`` (a level below zero, over-charged, refills the same way)."""
    if now <= since:
        return level
    return min(capacity, level + (now - since) * rate)


def wait_for(level: float, need: float, rate: float) -> float:
    """Seconds until a bucket holding ``level`` and refilling at ``rate`` holds ``need``
    (0.0 when it already does)."""
    if need <= level:
        return 0.0
    return (need - level) / rate


def settle(level: float, deficit: float, outstanding: float, capacity: float, reserved: float,
           actual: float | None) -> tuple[float, float, float]:
    """Settle a reservation of ``reserved`` units: the call used ``actual`` units, or never
    reached the provider (``actual=None``, a refund). Returns the new ``(level, deficit,
    outstanding)``.

    ``deficit`` is a lower bound on how far the provider's bucket would be above ours if none of
    the ``outstanding`` reservations (this one included) had been made. Without this one alone,
    the provider's is at least ``deficit - (outstanding - reserved)`` above ours: that much may
    come back (minus what the call did use). Using more than reserved charges the difference.
    """
    others = outstanding - reserved
    if actual is not None and actual >= reserved:
        level -= actual - reserved
        deficit -= reserved
    else:
        used = actual or 0.0
        # ``max(0.0, min(reserved - used, deficit - others - used))`` and ``min(capacity,
        # level + credit)``, written out (no builtin call: every refund)
        credit = reserved - used
        if deficit - others - used < credit:
            credit = deficit - others - used
        if not credit > 0.0:
            credit = 0.0
        level += credit
        if not level < capacity:
            level = capacity
        deficit -= credit + used
    # max(0, min(deficit, capacity - level)), written out: this runs on every settled call
    if deficit > capacity - level:
        deficit = capacity - level
    return level, deficit if deficit > 0.0 else 0.0, others
