"""The recommended stack as data: :class:`StackSpec`, the options the applications share, and
:func:`build_stack`, the one recipe turning them into layers.

``llmguard run`` (its ``Settings``), ``llmguard serve`` (each model's config) and Ray (its
``Stack``) embed a spec and build it here, so an option means the same everywhere and the layer
order is written once: Metrics -> Cache -> Fallback -> Retry -> CircuitBreaker -> Timeout ->
RateLimit -> ConcurrencyLimit | AdaptiveConcurrency (the README's "Layer order": Retry outside
the limiters so a backoff never holds a slot, the concurrency limit innermost so it bounds
requests at the provider).

To add an option: a field of :class:`StackSpec` with its check in :data:`CHECKS`, and its layer
(or layer argument) in :func:`build_stack`; the applications' parsers read the field list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .._core.check import number
from .._core.layer import Layer
from .pipeline import Pipeline

__all__ = ["CHECKS", "StackSpec", "build_stack", "stack_options"]


def _count(low: int) -> Callable[[str, Any], Any]:
    return lambda name, v: number(name, v, integer=True, low=low, low_open=False)


def _optional_count(name: str, value: Any) -> Any:
    return number(name, value, integer=True, optional=True, low=1, low_open=False)


def _seconds(name: str, value: Any) -> Any:
    return number(name, value, optional=True, unit=" of seconds", hint="; or None")


def _choice(*choices: str) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                             f"got {value!r}")
        return value
    return check


def _flag(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _names(name: str, value: Any) -> Any:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(f"{name} must be a tuple of model names, got {value!r}")
    return value


#: Each option's check: raises ``TypeError``/``ValueError`` naming the option and what it takes.
CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "rpm": _optional_count, "tpm": _optional_count,
    "input_tpm": _optional_count, "output_tpm": _optional_count,
    "burst": lambda n, v: number(n, v, optional=True, hint="; or None"),
    "margin": lambda n, v: number(n, v, optional=True, low_open=False, unit=" of seconds",
                                  hint="; or None"),
    "refill": _choice("auto", "window", "continuous"), "charge": _choice("reserved", "actual"),
    "concurrency": _count(1), "adaptive": _flag, "retries": _count(0), "timeout": _seconds,
    "fallbacks": _names, "cache_ttl": _seconds, "circuit_breaker": _flag, "max_wait": _seconds,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StackSpec:
    """The options of the recommended stack, validated on creation (each error names its option).

    Defaults are ``llmguard run``'s; an application keeps its own defaults as a spec of its own
    (``dataclasses.replace(spec, ...)`` derives one).
    """

    #: Requests and tokens per minute the provider allows (None: no such quota).
    rpm: int | None = None
    tpm: int | None = None
    #: Input and output tokens per minute apart (Anthropic's ITPM/OTPM; None: no such quota).
    input_tpm: int | None = None
    output_tpm: int | None = None
    #: RateLimit's ``burst``, ``margin`` (seconds added to each window; None: RateLimit's
    #: default), ``refill`` (``"auto"``: paced like the server's limiter once its headers and
    #: 429s show it, ``"window"`` or ``"continuous"``) and ``charge`` (``"reserved"`` keeps each
    #: token reservation as made, as OpenAI charges ``max_tokens`` at admission; ``"actual"``).
    burst: float | None = None
    margin: float | None = None
    refill: str = "auto"
    charge: str = "reserved"
    #: Requests in flight at once, or an adaptive limit instead.
    concurrency: int = 16
    adaptive: bool = False
    #: Retries after the first attempt (0: no Retry layer).
    retries: int = 3
    #: Seconds for one attempt at the provider (None: no Timeout layer).
    timeout: float | None = 60.0
    #: Models tried in order when the model fails.
    fallbacks: tuple[str, ...] = ()
    #: Seconds an answer stays cached (None: no cache).
    cache_ttl: float | None = None
    #: A CircuitBreaker in front of the provider.
    circuit_breaker: bool = False
    #: Seconds a call may wait for quota or a slot before it is refused (None: as long as needed).
    max_wait: float | None = None

    def __post_init__(self) -> None:
        for name, check in CHECKS.items():
            check(name, getattr(self, name))


def stack_options() -> tuple[str, ...]:
    """The option names, in declaration order (what an application's parser accepts)."""
    return tuple(f.name for f in fields(StackSpec))


def _model(name: str) -> Mapping[str, str]:
    return {"model": name}


def build_stack(spec: StackSpec, *, name: str | None = None,
                metrics: Mapping[str, Any] | None = None,
                cache: Mapping[str, Any] | None = None,
                fallback: Callable[[str], Any] = _model, backend: Any = None,
                budget: Layer | None = None, rate_limit: Layer | None = None,
                limiter: Any = None, share: int = 1,
                tokens: Callable[..., int] | None = None) -> Pipeline:
    """The pipeline of ``spec``, in the recommended order.

    ``metrics`` holds Metrics options (None: no Metrics layer); ``cache`` more Cache options
    (a ``store``, ``per_partition``); ``fallback(model)`` is the alternate for one fallback
    model (default: the same call with ``{"model": model}``); ``backend`` is the rate limit's
    and the circuit's shared state (a Redis backend, or None: this process); ``budget`` is a
    spend cap (``--max-cost``, a tenant's budget), inside Retry so each attempt reserves and
    outside the limiters so a refused call holds no quota or slot; ``rate_limit``
    replaces the RateLimit built from the spec (a learned one); ``limiter`` is the concurrency
    limiter to use (a Redis one) instead of one of ``spec.concurrency``; ``share`` divides the
    quotas and the concurrency among that many processes that do not share a backend;
    ``tokens`` is the RateLimit's estimate (default ``llmguard.estimate_tokens``).
    """
    p = Pipeline(name=name)
    if metrics is not None:
        p = p.metrics(**metrics)
    if spec.cache_ttl is not None:
        p = p.cache(ttl=spec.cache_ttl, **(cache or {}))
    if spec.fallbacks:
        p = p.fallback(*(fallback(model) for model in spec.fallbacks))
    if spec.retries:
        p = p.retry(attempts=spec.retries + 1)
    if spec.circuit_breaker:
        p = p.circuit_breaker(name=name, backend=backend)
    if spec.timeout is not None:
        p = p.timeout(spec.timeout)
    if budget is not None:
        p = p.then(budget)
    if rate_limit is not None:
        p = p.then(rate_limit)
    elif any(q is not None for q in (spec.rpm, spec.tpm, spec.input_tpm, spec.output_tpm)):
        p = p.rate_limit(rpm=None if spec.rpm is None else spec.rpm // share,
                         tpm=None if spec.tpm is None else spec.tpm // share,
                         input_tpm=None if spec.input_tpm is None else spec.input_tpm // share,
                         output_tpm=None if spec.output_tpm is None else spec.output_tpm // share,
                         burst=spec.burst, margin=spec.margin, refill=spec.refill,
                         charge=spec.charge, max_wait=spec.max_wait, backend=backend,
                         **({} if tokens is None else {"tokens": tokens}))
    if spec.adaptive:
        return p.adaptive_concurrency(max_wait=spec.max_wait)
    if limiter is not None:
        return p.concurrency_limit(limiter)
    return p.concurrency_limit(max(1, spec.concurrency // share), max_wait=spec.max_wait)
