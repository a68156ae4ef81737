"""Fault injection (the Simmy idea): a layer that makes any provider fail in every way, seeded.

Put it innermost, just around the provider, and drive a full pipeline through it to see that
nothing is lost, nothing leaks and nothing hangs.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._core.check import number
from .._core.check import seed as check_seed
from .._core.classify import FailureKind
from .._core.stream import Stream
from ._provider import ProviderError

__all__ = ["FaultStats", "Faults", "make_error"]

#: Status code and message of the injected error for each failure kind.
_ERRORS: dict[FailureKind, tuple[int | None, str]] = {
    FailureKind.RATE_LIMITED: (429, "Rate limit reached for requests"),
    FailureKind.QUOTA_EXHAUSTED: (429, "You exceeded your current quota (insufficient_quota)"),
    FailureKind.OVERLOADED: (503, "The server is overloaded"),
    FailureKind.SERVER_ERROR: (500, "Internal server error"),
    FailureKind.CONTEXT_WINDOW: (400, "This model's maximum context length is 8192 tokens"),
    FailureKind.CONTENT_POLICY: (400, "Rejected by the content_policy safety system"),
    FailureKind.AUTH: (401, "Incorrect API key provided"),
    FailureKind.BAD_REQUEST: (400, "Invalid request"),
    FailureKind.TIMEOUT: (None, "Request timed out"),
    FailureKind.CONNECTION: (None, "Connection reset by peer"),
}

#: The mix of error kinds injected by default: mostly transient, some permanent.
DEFAULT_KINDS: Mapping[FailureKind, float] = {
    FailureKind.RATE_LIMITED: 4,
    FailureKind.OVERLOADED: 2,
    FailureKind.SERVER_ERROR: 2,
    FailureKind.TIMEOUT: 1,
    FailureKind.CONNECTION: 1,
    FailureKind.CONTEXT_WINDOW: 0.5,
    FailureKind.CONTENT_POLICY: 0.5,
}


def make_error(kind: FailureKind, *, retry_after: float | None = None) -> Exception:
    """Build an exception that :func:`llmguard.classify` classifies as ``kind``."""
    if kind is FailureKind.UNKNOWN:
        return RuntimeError("injected unknown failure")
    status, message = _ERRORS[kind]
    if status is None:
        error: type[Exception] = TimeoutError if kind is FailureKind.TIMEOUT else ConnectionError
        return error(f"injected: {message}")
    headers = {} if retry_after is None else {"retry-after": f"{retry_after:.3f}"}
    return ProviderError(f"injected: {message}", status_code=status, headers=headers)


@dataclass(frozen=True, slots=True)
class FaultStats:
    calls: int
    #: Injected faults by name: an error kind's value, "spike", "hang", "storm", "truncated".
    injected: Mapping[str, int]


def _check_rate(name: str, value: float) -> float:
    return float(number(name, value, low_open=False, high=1,
                        what="a probability between 0 and 1"))


class Faults:
    """A layer that injects faults into the calls passing through it.

    * ``error_rate``: probability of raising an error; its kind is drawn from ``kinds`` (a
      mapping of :class:`FailureKind` to weight; rate-limit errors carry ``retry_after``).
    * ``spike_rate`` / ``spike``: probability of adding ``spike`` seconds of latency.
    * ``hang_rate``: probability of never answering (until the caller cancels or times out).
    * ``storm_every`` / ``storm_for``: every ``storm_every`` seconds of loop time, a 429 storm of
      ``storm_for`` seconds in which every call is rate-limited with Retry-After until its end.
    * ``truncate_rate``: probability that a streamed answer breaks after its first chunk.

    ``seed`` makes a run reproducible.
    """

    def __init__(
        self,
        *,
        error_rate: float = 0.0,
        kinds: Mapping[FailureKind, float] | None = None,
        retry_after: float = 1.0,
        spike_rate: float = 0.0,
        spike: float = 5.0,
        hang_rate: float = 0.0,
        storm_every: float | None = None,
        storm_for: float = 5.0,
        truncate_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.error_rate = _check_rate("error_rate", error_rate)
        self.spike_rate = _check_rate("spike_rate", spike_rate)
        self.hang_rate = _check_rate("hang_rate", hang_rate)
        self.truncate_rate = _check_rate("truncate_rate", truncate_rate)
        if kinds is not None and not isinstance(kinds, Mapping):
            raise TypeError(f"kinds must map FailureKind to a weight, got {kinds!r}")
        weights = dict(DEFAULT_KINDS if kinds is None else kinds)
        for kind, weight in weights.items():
            if not isinstance(kind, FailureKind):
                raise TypeError(f"kinds keys must be FailureKind members, got {kind!r}")
            number("kinds", weight, low_open=False, hint=f" for {kind}")
        if not sum(weights.values()) > 0:
            raise ValueError("kinds must map FailureKind to non-negative weights, some positive")
        self._kinds = list(weights)
        self._weights = list(weights.values())
        for name, value in (("retry_after", retry_after), ("spike", spike)):
            number(name, value, low_open=False, unit=" of seconds")
        number("storm_for", storm_for, unit=" of seconds")
        number("storm_every", storm_every, optional=True, unit=" of seconds",
               hint="; or None for no storms")
        check_seed(seed)
        if storm_every is not None and storm_every <= storm_for:
            raise ValueError(f"storm_every must exceed storm_for ({storm_for}), got {storm_every}")
        self.retry_after = retry_after
        self.spike = spike
        self.storm_every = storm_every
        self.storm_for = storm_for
        self._rng = random.Random(seed)
        self._calls = 0
        self._injected: Counter[str] = Counter()

    def statistics(self) -> FaultStats:
        return FaultStats(self._calls, dict(self._injected))

    def _storm_left(self) -> float:
        if self.storm_every is None:
            return 0.0
        phase = asyncio.get_running_loop().time() % self.storm_every
        return max(0.0, self.storm_for - phase)

    async def __call__(self, call: Any, call_next: Any, /) -> Any:
        self._calls += 1
        call.mark_sent()  # it plays the provider: its hangs and errors happen after sending
        rng = self._rng
        storm = self._storm_left()
        if storm > 0:
            self._injected["storm"] += 1
            raise make_error(FailureKind.RATE_LIMITED, retry_after=storm)
        if self.hang_rate and rng.random() < self.hang_rate:
            self._injected["hang"] += 1
            await asyncio.Event().wait()  # until cancelled
        if self.spike_rate and rng.random() < self.spike_rate:
            self._injected["spike"] += 1
            await asyncio.sleep(self.spike)
        if self.error_rate and rng.random() < self.error_rate:
            kind = rng.choices(self._kinds, self._weights)[0]
            self._injected[kind.value] += 1
            retry_after = self.retry_after if kind is FailureKind.RATE_LIMITED else None
            raise make_error(kind, retry_after=retry_after)
        result = await call_next(call)
        if isinstance(result, Stream) and self.truncate_rate and rng.random() < self.truncate_rate:
            self._injected["truncated"] += 1
            return await Stream.start(_truncated(result))
        return result

    def __repr__(self) -> str:
        return f"<Faults calls={self._calls} injected={dict(self._injected)}>"


async def _truncated(stream: Stream) -> AsyncIterator[Any]:
    async with stream:
        async for chunk in stream:
            yield chunk
            raise make_error(FailureKind.CONNECTION)
