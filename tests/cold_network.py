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

