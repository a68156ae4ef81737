"""The one signal-and-grace stopper, shared by ``batch(handle_signals=True)`` and ``llmguard run``.

First SIGINT/SIGTERM: ``stop(name)`` (the owner stops starting work at once), then ``abandon()``
after ``grace`` seconds (the owner cancels what is still running). A second signal calls
``abandon()`` at once. The stopper prints nothing: its owner's summary is the only account.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

__all__ = ["Stopper"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopper:
    """See the module docstring. Use as a context manager inside the running loop."""

    __slots__ = ("_abandon", "_loop", "_stop", "_timer", "abandoned", "grace", "signal")

    def __init__(self, grace: float, *, stop: Callable[[str], None],
                 abandon: Callable[[], None]) -> None:
        #: Seconds work in progress gets after the first signal.
        self.grace = grace
        #: The name of the first signal received (``"SIGINT"``), or None.
        self.signal: str | None = None
        #: True once ``abandon`` ran (second signal or grace over).
        self.abandoned = False
        self._stop, self._abandon = stop, abandon
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> Stopper:
        self._loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            self._loop.add_signal_handler(sig, self, sig.name)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is not None:
            for sig in _SIGNALS:
                self._loop.remove_signal_handler(sig)

    def __call__(self, name: str = "SIGINT") -> None:
        """React to a signal (also callable directly, e.g. from tests)."""
        if self.signal is not None:
            self.abandon()
            return
        self.signal = name
        self._stop(name)
        loop = self._loop or asyncio.get_running_loop()
        self._timer = loop.call_later(self.grace, self.abandon)

    def abandon(self) -> None:
        """Give up on the work still running (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
        if not self.abandoned:
            self.abandoned = True
            self._abandon()

    def __repr__(self) -> str:
        return f"<Stopper grace={self.grace:g} signal={self.signal} abandoned={self.abandoned}>"
