"""Per-attempt timeouts that never turn the caller's own cancellation into a timeout."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from ._core import Call, Handler
from ._errors import TimeoutExceeded

__all__ = ["Timeout", "TimeoutStats"]


@dataclass(frozen=True, slots=True)
class TimeoutStats:
    calls: int
    timed_out: int


class Timeout:
    """Layer: each attempt gets at most ``seconds`` (and never runs past ``call.deadline``).

    On expiry it raises :class:`llmguard.TimeoutExceeded` (a ``TimeoutError``) naming the limit,
    which Retry treats as a TIMEOUT failure. A cancellation that comes from the caller stays a
    ``CancelledError``, and a ``TimeoutError`` raised by the wrapped client itself passes through
    unchanged. For a streamed answer the limit covers the call up to its first chunk.
    """

    __slots__ = ("seconds", "_calls", "_timed_out")

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            seconds > 0 and math.isfinite(seconds)
        ):
            raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
        self.seconds = float(seconds)
        self._calls = self._timed_out = 0

    def statistics(self) -> TimeoutStats:
        return TimeoutStats(self._calls, self._timed_out)

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        self._calls += 1
        loop = asyncio.get_running_loop()
        limit = self.seconds
        because = f"Timeout({self.seconds:g})"
        if call.deadline is not None and call.deadline - loop.time() < limit:
            limit = call.deadline - loop.time()
            because = "the retry deadline"
        if limit <= 0:
            self._timed_out += 1
            raise TimeoutExceeded(
                f"no time left for attempt {call.attempt}: {because} has passed; raise the "
                "Retry deadline or lower the number of attempts",
                seconds=self.seconds,
            )
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                return await call_next(call)
        except TimeoutError as exc:
            if not scope.expired():  # the client's own TimeoutError: not ours to rename
                raise
            self._timed_out += 1
            raise TimeoutExceeded(
                f"attempt {call.attempt} of {call.name or 'the call'} took longer than "
                f"{limit:g} s ({because}); raise the timeout if the provider is just slow",
                seconds=limit,
            ) from exc

    def __repr__(self) -> str:
        return f"Timeout({self.seconds:g}, calls={self._calls}, timed_out={self._timed_out})"
