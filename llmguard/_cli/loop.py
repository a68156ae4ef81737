"""The event loop ``llmguard run`` runs on: uvloop's when it is installed (the ``cli`` extra
installs it off Windows; uvicorn's ``standard`` extra too), else asyncio's own.

Why: a run over a fast provider spends about a third of its CPU in the event loop and the
socket transports, which uvloop does in C (10,000 lines: 2.60 s of CPU instead of 2.95).
``LLMGUARD_LOOP=asyncio`` keeps asyncio's loop (to rule the loop out when debugging).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["loop_factory", "run_main"]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (asyncio's) when uvloop is missing or not wanted."""
    if os.environ.get("LLMGUARD_LOOP") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_main(main: Coroutine[Any, Any, int]) -> int:
    """Run the command's main coroutine to its exit code, on :func:`loop_factory`'s loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
