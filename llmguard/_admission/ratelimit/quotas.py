"""The quotas a :class:`RateLimit` enforces, built and checked from its keyword arguments, and
the tokens a call used, read from its result for reconciliation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..._core.check import number, token_count
from ..._core.errors import RequestTooLarge
from ..._core.tokens import extract_usage
from .window import Quota

__all__ = ["DEFAULT_MARGIN", "build_quotas", "check_backend", "check_choice", "recorded_usage",
           "too_large", "used_tokens"]

#: Seconds added to a per-minute window at the start (``margin=None``; a shorter window gets
#: the same share, 1/120 of it), until RateLimit has measured the send latency (``latency``):
#: a cold client's first requests reach the server 0.12-0.2 s after they are counted here
#: (connection and TLS set-up), later ones within a few ms; a strict sliding-window server
#: saw 130 within 59.87 s of ``RateLimit(rpm=120)`` with no margin. The library and
#: ``llmguard run`` use the same default.
DEFAULT_MARGIN = 0.5

#: What a quota's error message suggests instead.
_NO_QUOTA = "; pass None for no such quota"

_CHOICES = {
    "charge": {"actual": "reconcile to the usage reported",
               "reserved": "keep the estimate, as OpenAI charges max_tokens"},
    "refill": {"auto": "paced like the server's own limiter, its shape learned from what it "
                       "says; safe with every shape until then",
               "window": "never more than the quota in any window: safe with every provider",
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
                 margin: float | None, refill: str, input_tpm: int | None = None,
                 output_tpm: int | None = None) -> tuple[Quota, ...]:
    """The :class:`Quota` tuple for these settings (each checked, errors naming the argument):
    the quotas, their ``burst`` shares over proportionally shorter windows, each window
    ``margin`` seconds longer (a bucket refills that much slower; None: ``DEFAULT_MARGIN`` per
    minute of window)."""
    refill = check_choice("refill", refill)
    continuous, learn = refill == "continuous", refill == "auto"
    configured = (
        (number("rpm", rpm, integer=True, optional=True, hint=_NO_QUOTA), 60.0, False, ""),
        (number("rps", rps, integer=True, optional=True, hint=_NO_QUOTA), 1.0, False, ""),
        (number("tpm", tpm, integer=True, optional=True, hint=_NO_QUOTA), 60.0, True, ""),
        (number("input_tpm", input_tpm, integer=True, optional=True, hint=_NO_QUOTA), 60.0,
         True, "input"),
        (number("output_tpm", output_tpm, integer=True, optional=True, hint=_NO_QUOTA), 60.0,
         True, "output"),
    )
    # Input/output token quotas (Anthropic, Vertex AI) learn their shape like the others, from
    # their own ``anthropic-ratelimit-{input,output}-tokens-*`` readings: a gateway in front of
    # Anthropic may count them per clock minute although Anthropic documents buckets.
    quotas = [Quota(n, window, tokens, continuous, learn, part=part)
              for n, window, tokens, part in configured if n]
    if not quotas:
        raise ValueError("RateLimit needs a quota: pass rpm=, rps=, tpm=, input_tpm= and/or "
                         "output_tpm=")
    if burst is not None:
        number("burst", burst, high=1, what="a fraction of each quota in (0, 1]")
        quotas += [Quota(max(1, int(q.limit * burst)), q.window * burst, q.tokens, q.continuous,
                         q.learn, part=q.part) for q in quotas]
    number("margin", margin, low_open=False, unit=" of seconds", optional=True,
           hint="; e.g. margin=0.5 for a per-minute quota over the network")
    # each admission counts that much longer than the provider's window
    return tuple(Quota(q.limit, q.window + extra, q.tokens, q.continuous, q.learn, extra, q.part)
                 if (extra := (q.window * DEFAULT_MARGIN / 60 if margin is None else margin))
                 else q for q in quotas)


def recorded_usage(call: Any, result: Any) -> Any:
    """The result's usage (None when it reports none), recorded as ``call.record.usage`` when
    no layer has yet."""
    found = extract_usage(result)
    if found is not None and call.record.usage is None:
        call.record.usage = found
    return found


def used_tokens(call: Any, result: Any, reserved: int,
                usage: Callable[[Any], int | None] | None) -> int:
    """Tokens the call used: ``usage(result)``, else the result's ``usage.total_tokens`` (also
    recorded as ``call.record.usage`` when no layer has yet), else ``reserved`` when it says
    none."""
    if usage is not None:
        actual = usage(result)
    else:  # ``recorded_usage(call, result)``, written out (every call)
        found = extract_usage(result)
        if found is None:
            return reserved
        record = call._record or call.record  # (made by now: ``record_of``, without its frame)
        if record.usage is None:
            record.usage = found
        actual = found[0] + found[1]  # ``found.total_tokens`` (a Usage: a tuple), no property
    if actual is None:
        return reserved
    if type(actual) is int and actual >= 0:  # a count already (a Usage's): nothing to check
        return actual
    try:
        return token_count(actual, "RateLimit(usage=...)")
    except (TypeError, ValueError) as exc:  # the answer is paid for: keep it, keep the estimate
        logging.getLogger("llmguard.ratelimit").warning("%s; the reservation stays as estimated",
                                                         exc)
        return reserved


def too_large(tokens: int, most: int | None, quotas: str) -> RequestTooLarge:
    """The error for a call whose estimate exceeds every token quota's size."""
    return RequestTooLarge(
        f"the call needs an estimated {tokens} tokens but at most {most} are ever available "
        f"({quotas}); shorten the prompt or max_tokens, or raise the token quota")
