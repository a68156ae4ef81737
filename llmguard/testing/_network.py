"""A network between caller and a simulated server that is cold for the opening burst."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._core.check import number

__all__ = ["cold_start"]


def cold_start(cold: float, warm: float = 0.0, span: float = 1.0) -> Callable[[Any], float]:
    """A server's ``send_latency`` (:class:`~llmguard.testing.QuotaServer`): ``cold`` seconds
    each way for the trips started within ``span`` s of the first (the opening burst's
    connections being set up on a slow link), ``warm`` after. One per server: it times from
    its own first trip."""
    number("cold", cold, low_open=False, unit=" of seconds")
    number("warm", warm, low_open=False, unit=" of seconds")
    number("span", span, low_open=False, unit=" of seconds")
    first: list[float] = []

    def latency(_rng: Any) -> float:
        now = asyncio.get_running_loop().time()
        if not first:
            first.append(now)
        return cold if now < first[0] + span else warm

    return latency
