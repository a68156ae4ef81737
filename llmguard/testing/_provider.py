"""SimulatedProvider: a model of an LLM provider's capacity, latency and quotas.

Load-test a pipeline against it under virtual time (looptime) to see how it behaves when a
provider saturates, rate-limits or changes capacity mid-run.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core.check import number
from .._core.check import seed as check_seed
from .._core.tokens import estimate_tokens
from .._upstream.errors import Overloaded, ProviderError, RateLimited

__all__ = ["Overloaded", "ProviderError", "ProviderStats", "RateLimited", "SimulatedProvider"]


@dataclass(frozen=True, slots=True)
class ProviderStats:
    calls: int
    served: int
    rate_limited: int
    overloaded: int
    in_flight: int
    max_in_flight: int
    input_tokens: int
    output_tokens: int
    #: Most requests / tokens ever admitted within one sliding window.
    peak_window_requests: int
    peak_window_tokens: int


class SimulatedProvider:
    """A provider with a concurrency capacity, queueing latency and strict RPM/TPM quotas.

    * Up to ``capacity`` calls run at full speed: ``latency + seconds_per_output_token *
      output_tokens``. Beyond it the provider shares its capacity (processor sharing), so each
      call's service time stretches by ``in_flight / capacity``.
    * Beyond ``overload_at`` calls in flight (default ``2 * capacity``) it answers
      :class:`Overloaded` (503) at once.
    * ``rpm`` / ``tpm`` are enforced over a sliding ``window`` (60 s): a call that would exceed
      either is answered :class:`RateLimited` (429) with a ``retry-after`` header saying when the
      window has room again. Tokens counted are the prompt estimate plus ``max_tokens`` (or the
      actual output when none is given), as providers count them at admission.
    * ``capacity`` may be changed during a run (``provider.capacity = 16``).

    ``output_tokens`` is a number or a callable ``(rng, kwargs) -> int``; ``seed`` makes it
    reproducible.
    """

    def __init__(
        self,
        *,
        capacity: int = 16,
        latency: float = 1.0,
        seconds_per_output_token: float = 0.0,
        overload_at: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        window: float = 60.0,
        output_tokens: int | Callable[[random.Random, dict[str, Any]], int] = 64,
        seed: int = 0,
    ) -> None:
        number("capacity", capacity, integer=True)
        for name, value in (("overload_at", overload_at), ("rpm", rpm), ("tpm", tpm)):
            number(name, value, integer=True, optional=True, hint="; or None")
        for name, value in (("latency", latency),
                            ("seconds_per_output_token", seconds_per_output_token)):
            number(name, value, low_open=False, unit=" of seconds")
        number("window", window, unit=" of seconds")
        if not callable(output_tokens):
            number("output_tokens", output_tokens, integer=True, low_open=False,
                   hint="; or a callable (rng, kwargs) -> int")
        check_seed(seed)
        self.capacity = capacity
        self.latency = latency
        self.seconds_per_output_token = seconds_per_output_token
        self._overload_at = overload_at
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self.output_tokens = output_tokens
        self._rng = random.Random(seed)
        self._admitted: deque[tuple[float, int]] = deque()  # (time, tokens) inside the window
        self._window_tokens = 0
        self._calls = self._served = self._rate_limited = self._overloaded = 0
        self._in_flight = self._max_in_flight = 0
        self._input_tokens = self._output_tokens = 0
        self._peak_requests = self._peak_tokens = 0

    @property
    def overload_at(self) -> int:
        return self._overload_at if self._overload_at is not None else 2 * self.capacity

    def statistics(self) -> ProviderStats:
        return ProviderStats(
            self._calls,
            self._served,
            self._rate_limited,
            self._overloaded,
            self._in_flight,
            self._max_in_flight,
            self._input_tokens,
            self._output_tokens,
            self._peak_requests,
            self._peak_tokens,
        )

    def _expire(self, now: float) -> None:
        while self._admitted and self._admitted[0][0] <= now - self.window:
            self._window_tokens -= self._admitted.popleft()[1]

    def _retry_after(self, now: float, tokens: int) -> float:
        """Seconds until the window has room for one more request of ``tokens``."""
        wait = 0.0
        if self.rpm is not None and len(self._admitted) >= self.rpm:
            wait = self._admitted[len(self._admitted) - self.rpm][0] + self.window - now
        if self.tpm is not None:
            excess = self._window_tokens + tokens - self.tpm
            for when, used in self._admitted:
                if excess <= 0:
                    break
                excess -= used
                wait = max(wait, when + self.window - now)
        return max(wait, 0.001)

    def _admit(self, tokens: int) -> None:
        now = asyncio.get_running_loop().time()
        self._expire(now)
        self._calls += 1
        over_rpm = self.rpm is not None and len(self._admitted) + 1 > self.rpm
        over_tpm = self.tpm is not None and self._window_tokens + tokens > self.tpm
        if over_rpm or over_tpm:
            self._rate_limited += 1
            wait = self._retry_after(now, tokens)
            which = "requests" if over_rpm else "tokens"
            raise RateLimited(
                f"Rate limit reached for {which} per minute (limit "
                f"{self.rpm if over_rpm else self.tpm}). Please try again in {wait:.3f}s.",
                status_code=429,
                headers={"retry-after": f"{math.ceil(wait * 1000) / 1000:.3f}"},
            )
        if self._in_flight >= self.overload_at:
            self._overloaded += 1
            raise Overloaded(
                "The server is overloaded. Please retry.",
                status_code=503,
                headers={"retry-after": "1"},
            )
        self._admitted.append((now, tokens))
        self._window_tokens += tokens
        self._peak_requests = max(self._peak_requests, len(self._admitted))
        self._peak_tokens = max(self._peak_tokens, self._window_tokens)

    def _output_for(self, kwargs: dict[str, Any]) -> int:
        out = self.output_tokens
        n = out(self._rng, kwargs) if callable(out) else out
        limit = kwargs.get("max_tokens")
        return min(n, limit) if isinstance(limit, int) else n

    async def _serve(self, input_tokens: int, output: int, charged: int) -> None:
        self._admit(charged)
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            service = self.latency + self.seconds_per_output_token * output
            await asyncio.sleep(service * max(1.0, self._in_flight / self.capacity))
        finally:
            self._in_flight -= 1
        self._served += 1
        self._input_tokens += input_tokens
        self._output_tokens += output

    async def acompletion(self, **kwargs: Any) -> dict[str, Any]:
        """Answer an OpenAI-style chat request with a ``chat.completion`` dict with usage."""
        messages = kwargs.get("messages") or []
        input_tokens = estimate_tokens(messages=messages, max_tokens=0)
        output = self._output_for(kwargs)
        reserve = kwargs.get("max_tokens")
        charged = input_tokens + (reserve if isinstance(reserve, int) else output)
        await self._serve(input_tokens, output, charged)
        return {
            "object": "chat.completion",
            "model": kwargs.get("model", "simulated"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "x" * (4 * output)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output,
                "total_tokens": input_tokens + output,
            },
        }

    async def send_message(self, message: str) -> str:
        """Agent-style call: returns the reply text."""
        input_tokens = estimate_tokens(message, max_tokens=0)
        output = self._output_for({})
        await self._serve(input_tokens, output, input_tokens + output)
        return "x" * (4 * output)

    def __repr__(self) -> str:
        return (
            f"<SimulatedProvider capacity={self.capacity} in_flight={self._in_flight} "
            f"rpm={self.rpm} tpm={self.tpm} served={self._served} "
            f"429s={self._rate_limited} 503s={self._overloaded}>"
        )
