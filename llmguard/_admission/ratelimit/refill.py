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
           actual: float | None, since: float | None = None) -> tuple[float, float, float]:
    """Settle a reservation of ``reserved`` units: the call used ``actual`` units, or never
    reached the provider (``actual=None``, a refund). Returns the new ``(level, deficit,
    outstanding)``.

    ``deficit`` is a lower bound on how far the provider's bucket would be above ours if none of
    the ``outstanding`` reservations (this one included) had been made. Without this one alone,
    the provider's is at least ``deficit - (outstanding - reserved)`` above ours: that much may
    come back (minus what the call did use). Using more than reserved charges the difference.

    ``since`` (a give-back): the provider charged all ``reserved`` when the request arrived
    and gave the unused part back when its answer ended (Anthropic's output tokens), and at
    most ``since`` units of ours were charged after that (every reservation of ours not
    settled, and what those settled since this one was admitted were charged). A bucket loses
    a give-back only to its size, and from full the provider's fell by no more than ``since``:
    it holds at least ``capacity - since`` now, so ours may rise to that too, by no more than
    the unused part. Ours may settle long after the provider gave back (an answer held until
    the server is seen giving back, :mod:`.giveback`): given back whole then, what the
    provider's size had taken put ours above it (a server counting like Anthropic refused a
    call); the refund's bound alone gave a burst's first answers 36 of their 136 unused back,
    where the provider lost none.
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
        if since is not None and capacity - since - level > credit:
            credit = min(reserved - used, capacity - since - level)
        level += credit
        if not level < capacity:
            level = capacity
        # a give-back leaves the provider's above ours by what it did before, less the charge
        # it keeps (``used``) and its give-back (at most ``credit`` of which came back)
        deficit -= reserved if since is not None else credit + used
    # max(0, min(deficit, capacity - level)), written out: this runs on every settled call
    if deficit > capacity - level:
        deficit = capacity - level
    return level, deficit if deficit > 0.0 else 0.0, others
