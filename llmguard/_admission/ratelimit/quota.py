"""The quota a :class:`~.window.Window` keeps: a limit per window, its kind and margin."""

from __future__ import annotations

from dataclasses import dataclass

from ..._core.public import public

__all__ = ["Quota"]


@public
@dataclass(frozen=True, slots=True)
class Quota:
    """At most ``limit`` requests (``tokens=False``) or tokens in any ``window`` seconds; or,
    ``continuous=True``, a bucket of ``limit`` refilled at ``limit / window`` per second; or,
    ``learn=True``, paced like the server's own limiter once its shape is learned. ``margin``
    is the part of ``window`` added for the time a request takes to reach the server.
    ``part`` is ``"input"`` or ``"output"`` for a quota of only those tokens (``input_tpm=``,
    ``output_tpm=``; kept apart by ``split_backend.SplitBackend``)."""

    limit: int
    window: float
    tokens: bool
    continuous: bool = False
    learn: bool = False
    margin: float = 0.0
    part: str = ""

    def describe(self) -> str:
        unit = f"{self.part} tokens".lstrip() if self.tokens else "requests"
        window = round(self.window - self.margin, 9)
        per = {60.0: "minute", 1.0: "second"}.get(window, f"{window:g} s")
        return f"{self.limit} {unit} per {per}" + (" (refilled continuously)"
                                                   if self.continuous else "")
