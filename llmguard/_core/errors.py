"""Errors raised by llmguard itself.

Every message says what happened and what to change. Errors that mean "llmguard refused to send
the call" derive from :class:`AdmissionError`: Retry does not retry them by default (retrying a
local refusal only queues the same call again) and Fallback moves on at once.
"""

from __future__ import annotations

from .public import public

__all__ = [
    "AdmissionError",
    "AdmissionTimeout",
    "BackendUnavailable",
    "CircuitOpenError",
    "FallbackExhausted",
    "FirstChunkTimeout",
    "JobNotFound",
    "LLMGuardError",
    "QueueFull",
    "RequestTooLarge",
    "StreamIdleTimeout",
    "StreamTotalTimeout",
    "TimeoutExceeded",
]


@public
class LLMGuardError(Exception):
    """Base class of every error llmguard raises on its own account."""


@public
class AdmissionError(LLMGuardError):
    """An admission layer refused the call before it reached the provider."""


@public
class QueueFull(AdmissionError):
    """The limiter's waiting queue is at ``max_queue``: the call was rejected at once."""


@public
class AdmissionTimeout(AdmissionError, TimeoutError):
    """The call waited ``max_wait`` seconds for admission and gave up."""


@public
class RequestTooLarge(AdmissionError, ValueError):
    """The call alone needs more than a limit can ever grant (e.g. more tokens than ``tpm``)."""


@public
class BudgetExceeded(AdmissionError):
    """A :class:`~llmguard.Budget` cannot fit the call's maximum cost under its cap, even if every
    call in flight settled at zero. ``spent``, ``reserved`` (in flight), ``cap`` and ``needed``
    are in USD; ``resets_at`` is when the budget's window starts again (Unix time, or None for a
    total)."""

    def __init__(self, message: str, *, spent: float = 0.0, reserved: float = 0.0,
                 cap: float = 0.0, needed: float = 0.0, resets_at: float | None = None) -> None:
        super().__init__(message)
        self.spent, self.reserved, self.cap, self.needed = spent, reserved, cap, needed
        self.resets_at = resets_at


@public
class CircuitOpenError(AdmissionError):
    """The circuit is open: the provider was failing, so the call failed fast.

    ``retry_after`` is the number of seconds until the circuit lets a probe through.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@public
class TimeoutExceeded(LLMGuardError, TimeoutError):
    """A Timeout layer's limit ran out (never raised for the caller's own cancellation)."""

    def __init__(self, message: str, *, seconds: float | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds


@public
class FirstChunkTimeout(TimeoutExceeded):
    """A streamed answer's first chunk did not arrive within ``Timeout(first_chunk=...)``.

    Raised inside the pipeline, before anything reached the consumer, so Retry and Fallback act.
    """


@public
class StreamIdleTimeout(TimeoutExceeded):
    """A stream went silent for longer than ``Timeout(idle=...)`` between two chunks.

    Raised to the consumer mid-stream (after the first chunk nothing is retried).
    """


@public
class StreamTotalTimeout(TimeoutExceeded):
    """A stream ran longer than ``Timeout(total=...)`` from the start of its attempt."""


@public
class FallbackExhausted(ExceptionGroup, LLMGuardError):  # type: ignore[misc]
    """The primary and every alternate failed; ``exceptions`` holds each error in order."""


@public
class BackendUnavailable(LLMGuardError):
    """A shared-state backend (Redis) could not be reached and the layer fails closed."""


@public
class JobNotFound(LLMGuardError, KeyError):
    """No job with that id exists (it never did, or it expired after its TTL)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@public
class BatchInterrupted(LLMGuardError):
    """A batch stopped early on SIGINT/SIGTERM (``handle_signals=True``) after draining in-flight items.

    ``outcomes`` holds what finished (``batch``) or is empty (``batch_iter`` already yielded them);
    the message is a summary. Rerun with the same ``checkpoint`` to resume.
    """

    def __init__(self, message: str, outcomes: list | None = None) -> None:
        super().__init__(message)
        #: The outcomes collected before the interruption (``batch`` only).
        self.outcomes = outcomes or []
