"""The quotas a :class:`RateLimit` enforces, built and checked from its keyword arguments, and
the tokens a call used, read from its result for reconciliation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._core.check import number
from ..._core.tokens import extract_usage
from .window import Quota

__all__ = ["build_quotas", "check_backend", "check_choice", "used_tokens"]

#: What a quota's error message suggests instead.
_NO_QUOTA = "; pass None for no such quota"

_CHOICES = {
    "charge": {"actual": "reconcile to the usage reported",
               "reserved": "keep the estimate, as OpenAI charges max_tokens"},
    "refill": {"window": "never more than the quota in any window: safe with every provider",
               "continuous": "a bucket refilling at quota/window per second, as OpenAI and "
                             "Anthropic enforce"},
}


def check_choice(name: str, value: str) -> str:
    """``value`` if it is one of ``name``'s choices, else a ValueError naming each one."""
    choices = _CHOICES[name]
    if value not in choices:
        options = " or ".join(f"{option!r} ({why})" for option, why in choices.items())
        raise ValueError(f"{name} must be {options}, got {value!r}")
    return value


def check_backend(backend: Any) -> None:
    """A TypeError unless ``backend`` is None or looks like a :class:`RateLimitBackend`."""
    if backend is not None and not callable(getattr(backend, "reserve", None)):
        raise TypeError(
            f"backend must implement RateLimitBackend (reserve/reconcile/refund/...), e.g. "
            f"llmguard.backends.redis.RedisBackend, got {backend!r}; or None for in-memory"
        )


def build_quotas(rpm: int | None, rps: int | None, tpm: int | None, burst: float | None,
                 margin: float, refill: str) -> tuple[Quota, ...]:
    """The :class:`Quota` tuple for these settings (each checked, errors naming the argument):
    the quotas, their ``burst`` shares over proportionally shorter windows, each window
    ``margin`` seconds longer (a bucket refills that much slower)."""
    continuous = check_choice("refill", refill) == "continuous"
    configured = (
        (number("rpm", rpm, integer=True, optional=True, hint=_NO_QUOTA), 60.0, False),
        (number("rps", rps, integer=True, optional=True, hint=_NO_QUOTA), 1.0, False),
        (number("tpm", tpm, integer=True, optional=True, hint=_NO_QUOTA), 60.0, True),
    )
    quotas = [Quota(n, window, tokens, continuous) for n, window, tokens in configured if n]
    if not quotas:
        raise ValueError("RateLimit needs a quota: pass rpm=, rps= and/or tpm=")
    if burst is not None:
        number("burst", burst, high=1, what="a fraction of each quota in (0, 1]")
        quotas += [Quota(max(1, int(q.limit * burst)), q.window * burst, q.tokens, continuous)
                   for q in quotas]
    number("margin", margin, low_open=False, unit=" of seconds",
           hint="; e.g. margin=0.5 for a per-minute quota over the network")
    if margin:  # each admission counts that much longer than the provider's window
        quotas = [Quota(q.limit, q.window + margin, q.tokens, continuous) for q in quotas]
    return tuple(quotas)


def used_tokens(call: Any, result: Any, reserved: int,
                usage: Callable[[Any], int | None] | None) -> int:
    """Tokens the call used: ``usage(result)``, else the result's ``usage.total_tokens`` (also
    recorded as ``call.record.usage`` when no layer has yet), else ``reserved`` when it says
    none."""
    if usage is not None:
        actual = usage(result)
    else:
        found = extract_usage(result)
        if found is None:
            return reserved
        record = call.record
        if record.usage is None:
            record.usage = found
        actual = found.total_tokens
    return reserved if actual is None else int(actual)
