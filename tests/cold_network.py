"""A simulated server's network that is cold (slow connection set-up) and then warm."""

import asyncio
from typing import Any


def warming(server: Any, cold: float, warm: float, at: float) -> asyncio.Task[None]:
    """The network is ``cold`` seconds each way until ``at``, then ``warm`` (connections up)."""
    server.send_latency = cold

    async def warm_up() -> None:
        await asyncio.sleep(at)
        server.send_latency = warm

    return asyncio.get_running_loop().create_task(warm_up())


def cold_burst(cold: float = 0.8, warm: float = 0.01, span: float = 1.0) -> Any:
    """A server's ``send_latency``: ``cold`` seconds for requests sent within ``span`` s of the
    first (the opening burst's connections being set up), ``warm`` after."""
    first: list[float] = []

    def latency(_rng: Any) -> float:
        now = asyncio.get_running_loop().time()
        if not first:
            first.append(now)
        return cold if now < first[0] + span else warm

    return latency
