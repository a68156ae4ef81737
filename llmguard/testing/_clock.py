"""A wall clock that follows virtual time, for tests of what depends on the time of day.

llmguard reads the wall clock (:func:`llmguard._core.clock.wall`) where a server's limiter does:
a clock-minute window's boundaries (``refill="auto"`` supposes one after a 429 and probes it at
the next minute; :class:`ProxyWindowServer` counts per wall-clock minute), a reset or
Retry-After given as a date. By default it is the real time of day in step with the loop
clock, so a test's outcome could depend on the second of the minute it ran at; pinned, it is
the same in every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._core import clock
from .._core.check import number

__all__ = ["DEFAULT_EPOCH", "virtual_wall_clock"]

#: 2027-01-15 08:00:00 UTC: on a clock-minute (and hour) boundary, so loop time 0 starts one.
DEFAULT_EPOCH = 1_800_000_000.0


@contextmanager
def virtual_wall_clock(epoch: float = DEFAULT_EPOCH) -> Iterator[None]:
    """Within it, the wall clock llmguard and the simulated servers read is ``epoch`` plus the
    running loop's time (``time.monotonic()`` outside a loop): under ``looptime`` a clock
    minute then starts at loop time 0 (with the default epoch) and passes virtually, whatever
    the time of day. ``epoch=DEFAULT_EPOCH + 40`` starts 40 s into a minute. Restores the
    previous wall clock on exit (nested uses nest)::

        async def test_proxy() -> None:
            with virtual_wall_clock():
                server = ProxyWindowServer(rpm=60)
                ...
    """
    number("epoch", epoch, low_open=False, unit=" of seconds since 1970")
    previous = clock.pin_wall(float(epoch))
    try:
        yield
    finally:
        clock.pin_wall(previous)
