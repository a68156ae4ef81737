"""Bad input to every public constructor and to ``llmguard run`` fails early and clearly.

Each case builds something with one wrong argument and expects the error at construction (not
at the first call): ``TypeError`` when the value is not of a usable type at all (a str for a
number, ``True`` for a count: bool is not a number here), ``ValueError`` when it is the right
type but does not fit (zero, negative, NaN, an infinity, fractional where a count is due, out of
range, empty). The message names the argument (``match`` looks for it as a word).

Policy shared by every constructor: "no limit" is spelled ``None`` where an argument allows it,
never ``float("inf")``, so every number accepted is finite; huge finite values are accepted.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

import llmguard as lg
from llmguard._admission.ratelimit.charge import OPENING

NAN = float("nan")
INF = float("inf")


def case(id: str, error: type[Exception], arg: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """One table row: ``build(*args, **kwargs)`` must raise ``error`` naming ``arg``."""
    return pytest.param(build, args, kwargs, error, arg, id=id)


def _raises(build: Any, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception],
            arg: str) -> pytest.ExceptionInfo[Exception]:
    with pytest.raises(error, match=rf"(?<![\w.]){re.escape(arg)}\b") as info:
        build(*args, **kwargs)
    # Not a type the check forgot (a comparison blowing up inside the constructor): the
    # message is one of ours, so it says what it got or what to pass.
    assert type(info.value) is error, info.value
    return info


async def _send(**kwargs: Any) -> Any:  # a deployment's target
    return kwargs


def _lazy(name: str) -> Any:
    """A public name resolved at call time (layer modules load lazily), from the namespace
    that holds it (``llmguard.algorithms``, ``llmguard.backends`` or the top level)."""
    from llmguard._core.public import NAMESPACES

    def build(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(NAMESPACES.get(name, "llmguard")), name)(
            *args, **kwargs)

    return build


# --- limits: ConcurrencyLimit, RateLimit, AdaptiveConcurrency and its algorithms -------------

LIMIT_CASES = [
    case("ConcurrencyLimit-limit-zero", ValueError, "limit", _lazy("ConcurrencyLimit"), 0),
    case("ConcurrencyLimit-limit-negative", ValueError, "limit", _lazy("ConcurrencyLimit"), -1),
    case("ConcurrencyLimit-limit-nan", ValueError, "limit", _lazy("ConcurrencyLimit"), NAN),
    case("ConcurrencyLimit-limit-inf", ValueError, "limit", _lazy("ConcurrencyLimit"), INF),
    case("ConcurrencyLimit-limit-fraction", ValueError, "limit", _lazy("ConcurrencyLimit"), 2.5),
    case("ConcurrencyLimit-limit-str", TypeError, "limit", _lazy("ConcurrencyLimit"), "8"),
    case("ConcurrencyLimit-limit-bool", TypeError, "limit", _lazy("ConcurrencyLimit"), True),
    case("ConcurrencyLimit-limit-none", TypeError, "limit", _lazy("ConcurrencyLimit"), None),
    case("ConcurrencyLimit-max_queue-zero", ValueError, "max_queue", _lazy("ConcurrencyLimit"),
         4, max_queue=0),
    case("ConcurrencyLimit-max_queue-bool", TypeError, "max_queue", _lazy("ConcurrencyLimit"),
         4, max_queue=True),
    case("ConcurrencyLimit-max_wait-negative", ValueError, "max_wait",
         _lazy("ConcurrencyLimit"), 4, max_wait=-1),
    case("ConcurrencyLimit-max_wait-nan", ValueError, "max_wait", _lazy("ConcurrencyLimit"), 4,
         max_wait=NAN),
    case("ConcurrencyLimit-max_wait-inf", ValueError, "max_wait", _lazy("ConcurrencyLimit"), 4,
         max_wait=INF),
    case("ConcurrencyLimit-max_wait-str", TypeError, "max_wait", _lazy("ConcurrencyLimit"), 4,
         max_wait="5"),
    case("ConcurrencyLimit-key-not-callable", TypeError, "key", _lazy("ConcurrencyLimit"), 4,
         key="tenant"),
    case("ConcurrencyLimit-priority-not-callable", TypeError, "priority",
         _lazy("ConcurrencyLimit"), 4, priority=1),
    case("ConcurrencyLimiter-limit-zero", ValueError, "limit", _lazy("ConcurrencyLimiter"), 0),
    case("RateLimit-no-quota", ValueError, "rpm", _lazy("RateLimit")),
    case("RateLimit-rpm-zero", ValueError, "rpm", _lazy("RateLimit"), rpm=0),
    case("RateLimit-rpm-negative", ValueError, "rpm", _lazy("RateLimit"), rpm=-1),
    case("RateLimit-rpm-nan", ValueError, "rpm", _lazy("RateLimit"), rpm=NAN),
    case("RateLimit-rpm-inf", ValueError, "rpm", _lazy("RateLimit"), rpm=INF),
    case("RateLimit-rpm-fraction", ValueError, "rpm", _lazy("RateLimit"), rpm=0.5),
    case("RateLimit-rpm-str", TypeError, "rpm", _lazy("RateLimit"), rpm="500"),
    case("RateLimit-rpm-bool", TypeError, "rpm", _lazy("RateLimit"), rpm=True),
    case("RateLimit-rps-zero", ValueError, "rps", _lazy("RateLimit"), rps=0),
    case("RateLimit-tpm-negative", ValueError, "tpm", _lazy("RateLimit"), tpm=-100),
    case("RateLimit-tpm-inf", ValueError, "tpm", _lazy("RateLimit"), tpm=INF),
    case("RateLimit-tpm-list", TypeError, "tpm", _lazy("RateLimit"), tpm=[1000]),
    case("RateLimit-input_tpm-negative", ValueError, "input_tpm", _lazy("RateLimit"),
         input_tpm=-1),
    case("RateLimit-input_tpm-nan", ValueError, "input_tpm", _lazy("RateLimit"), input_tpm=NAN),
    case("RateLimit-output_tpm-zero", ValueError, "output_tpm", _lazy("RateLimit"),
         output_tpm=0),
    case("RateLimit-output_tpm-inf", ValueError, "output_tpm", _lazy("RateLimit"),
         output_tpm=INF),
    case("RateLimit-output_tpm-str", TypeError, "output_tpm", _lazy("RateLimit"),
         output_tpm="8000"),
    case("RateLimit-burst-zero", ValueError, "burst", _lazy("RateLimit"), rpm=10, burst=0),
    case("RateLimit-burst-above-one", ValueError, "burst", _lazy("RateLimit"), rpm=10, burst=2),
    case("RateLimit-burst-nan", ValueError, "burst", _lazy("RateLimit"), rpm=10, burst=NAN),
    case("RateLimit-burst-str", TypeError, "burst", _lazy("RateLimit"), rpm=10, burst="0.1"),
    case("RateLimit-margin-negative", ValueError, "margin", _lazy("RateLimit"), rpm=10,
         margin=-1),
    case("RateLimit-margin-inf", ValueError, "margin", _lazy("RateLimit"), rpm=10, margin=INF),
    case("RateLimit-margin-str", TypeError, "margin", _lazy("RateLimit"), rpm=10, margin="1"),
    case("RateLimit-charge-unknown", ValueError, "charge", _lazy("RateLimit"), tpm=10,
         charge="max_tokens"),
    case("RateLimit-max_wait-zero", ValueError, "max_wait", _lazy("RateLimit"), rpm=10,
         max_wait=0),
    case("RateLimit-max_wait-nan", ValueError, "max_wait", _lazy("RateLimit"), rpm=10,
         max_wait=NAN),
    case("RateLimit-max_wait-inf", ValueError, "max_wait", _lazy("RateLimit"), rpm=10,
         max_wait=INF),
    case("RateLimit-max_wait-bool", TypeError, "max_wait", _lazy("RateLimit"), rpm=10,
         max_wait=True),
    case("RateLimit-key-not-callable", TypeError, "key", _lazy("RateLimit"), rpm=10, key="k"),
    case("RateLimit-tokens-not-callable", TypeError, "tokens", _lazy("RateLimit"), tpm=10,
         tokens=100),
    case("RateLimit-usage-not-callable", TypeError, "usage", _lazy("RateLimit"), tpm=10,
         usage="total_tokens"),
    case("RateLimit-backend-wrong-type", TypeError, "backend", _lazy("RateLimit"), rpm=10,
         backend="redis://localhost"),
    case("AdaptiveConcurrency-initial-zero", ValueError, "initial",
         _lazy("AdaptiveConcurrency"), initial=0),
    case("AdaptiveConcurrency-initial-str", TypeError, "initial",
         _lazy("AdaptiveConcurrency"), initial="4"),
    case("AdaptiveConcurrency-min-negative", ValueError, "min", _lazy("AdaptiveConcurrency"),
         min=-1),
    case("AdaptiveConcurrency-max-inf", ValueError, "max", _lazy("AdaptiveConcurrency"),
         max=INF),
    case("AdaptiveConcurrency-max-bool", TypeError, "max", _lazy("AdaptiveConcurrency"),
         max=True),
    case("AdaptiveConcurrency-min-above-max", ValueError, "min", _lazy("AdaptiveConcurrency"),
         initial=4, min=8, max=6),
    case("AdaptiveConcurrency-algorithm-unknown", ValueError, "algorithm",
         _lazy("AdaptiveConcurrency"), algorithm="bbr"),
    case("AdaptiveConcurrency-algorithm-wrong-type", TypeError, "algorithm",
         _lazy("AdaptiveConcurrency"), algorithm=42),
    case("AdaptiveConcurrency-max_wait-nan", ValueError, "max_wait",
         _lazy("AdaptiveConcurrency"), max_wait=NAN),
    case("AdaptiveConcurrency-max_queue-zero", ValueError, "max_queue",
         _lazy("AdaptiveConcurrency"), max_queue=0),
    case("AIMD-backoff-one", ValueError, "backoff", _lazy("AIMD"), backoff=1),
    case("AIMD-backoff-nan", ValueError, "backoff", _lazy("AIMD"), backoff=NAN),
    case("AIMD-backoff-str", TypeError, "backoff", _lazy("AIMD"), backoff="0.9"),
    case("AIMD-initial-nan", ValueError, "initial", _lazy("AIMD"), NAN),
    case("AIMD-initial-str", TypeError, "initial", _lazy("AIMD"), "4"),
    case("AIMD-min_limit-zero", ValueError, "min_limit", _lazy("AIMD"), min_limit=0),
    case("AIMD-max_limit-inf", ValueError, "max_limit", _lazy("AIMD"), max_limit=INF),
    case("AIMD-max-below-min", ValueError, "min_limit", _lazy("AIMD"), min_limit=10,
         max_limit=5),
    case("Vegas-probe_every-zero", ValueError, "probe_every", _lazy("Vegas"),
         probe_every=0),
    case("Vegas-probe_every-bool", TypeError, "probe_every", _lazy("Vegas"),
         probe_every=True),
    case("Vegas-min_limit-nan", ValueError, "min_limit", _lazy("Vegas"), min_limit=NAN),
    case("Gradient2-tolerance-below-one", ValueError, "tolerance", _lazy("Gradient2"),
         tolerance=0.5),
    case("Gradient2-smoothing-zero", ValueError, "smoothing", _lazy("Gradient2"),
         smoothing=0),
    case("Gradient2-smoothing-nan", ValueError, "smoothing", _lazy("Gradient2"),
         smoothing=NAN),
    case("Gradient2-backoff-negative", ValueError, "backoff", _lazy("Gradient2"),
         backoff=-0.5),
    case("Gradient2-queue_size-not-callable", TypeError, "queue_size",
         _lazy("Gradient2"), queue_size=4),
    case("Gradient2-long_window-zero", ValueError, "long_window", _lazy("Gradient2"),
         long_window=0),
    case("Gradient-tolerance-nan", ValueError, "tolerance", _lazy("Gradient"),
         tolerance=NAN),
    case("Gradient-tolerance-str", TypeError, "tolerance", _lazy("Gradient"),
         tolerance="1.1"),
    case("Gradient-smoothing-above-one", ValueError, "smoothing", _lazy("Gradient"),
         smoothing=1.5),
    case("Gradient-backoff-zero", ValueError, "backoff", _lazy("Gradient"), backoff=0),
]


@pytest.mark.parametrize("build, args, kwargs, error, arg", LIMIT_CASES)
def test_limit_constructors_reject_bad_arguments(build, args, kwargs, error, arg) -> None:
    """Limits and limit algorithms refuse a bad argument at construction, naming it."""
    _raises(build, args, kwargs, error, arg)


def test_unbounded_limits_are_spelled_none() -> None:
    """An infinite bound is refused with a pointer to None, the spelling of "no bound"."""
    with pytest.raises(ValueError, match="pass None"):
        lg.RateLimit(rpm=INF)
    with pytest.raises(ValueError, match="pass None"):
        lg.ConcurrencyLimit(4, max_wait=INF)
    assert lg.RateLimit(tpm=10**12, rpm=10**9).quotas  # huge finite quotas are fine


def test_huge_integers_do_not_overflow_the_checks() -> None:
    """An int beyond a float's range is a valid (if silly) count, not an OverflowError."""
    assert lg.ConcurrencyLimit(10**400).limiter.limit == 10**400
    with pytest.raises(ValueError, match="max_wait"):
        lg.ConcurrencyLimit(4, max_wait=-(10**400))


def test_limit_algorithms_accept_their_defaults() -> None:
    """The checks do not refuse any algorithm's documented defaults."""
    import llmguard.algorithms

    for name in ("AIMD", "Vegas", "Gradient2", "Gradient"):
        assert math.isfinite(getattr(llmguard.algorithms, name)().limit)


# --- layers: Cache, Retry, RetryBudget, Fallback, CircuitBreaker, Metrics, Timeout ------------


async def _alternate(prompt: str) -> str:
    return prompt


LAYER_CASES = [
    case("Cache-ttl-missing", TypeError, "ttl", _lazy("Cache")),
    case("Cache-ttl-zero", ValueError, "ttl", _lazy("Cache"), ttl=0),
    case("Cache-ttl-negative", ValueError, "ttl", _lazy("Cache"), ttl=-5),
    case("Cache-ttl-nan", ValueError, "ttl", _lazy("Cache"), ttl=NAN),
    case("Cache-ttl-inf", ValueError, "ttl", _lazy("Cache"), ttl=INF),
    case("Cache-ttl-str", TypeError, "ttl", _lazy("Cache"), ttl="300"),
    case("Cache-ttl-bool", TypeError, "ttl", _lazy("Cache"), ttl=True),
    case("Cache-maxsize-zero", ValueError, "maxsize", _lazy("Cache"), ttl=1, maxsize=0),
    case("Cache-maxsize-fraction", ValueError, "maxsize", _lazy("Cache"), ttl=1, maxsize=1.5),
    case("Cache-maxsize-inf", ValueError, "maxsize", _lazy("Cache"), ttl=1, maxsize=INF),
    case("Cache-maxsize-str", TypeError, "maxsize", _lazy("Cache"), ttl=1, maxsize="big"),
    case("Cache-key-not-callable", TypeError, "key", _lazy("Cache"), ttl=1, key="prompt"),
    case("Cache-cache_if-not-callable", TypeError, "cache_if", _lazy("Cache"), ttl=1,
         cache_if=True),
    case("Cache-store-wrong-type", TypeError, "store", _lazy("Cache"), ttl=1, store={}),
    case("Retry-attempts-zero", ValueError, "attempts", _lazy("Retry"), attempts=0),
    case("Retry-attempts-negative", ValueError, "attempts", _lazy("Retry"), attempts=-3),
    case("Retry-attempts-nan", ValueError, "attempts", _lazy("Retry"), attempts=NAN),
    case("Retry-attempts-inf", ValueError, "attempts", _lazy("Retry"), attempts=INF),
    case("Retry-attempts-fraction", ValueError, "attempts", _lazy("Retry"), attempts=2.5),
    case("Retry-attempts-str", TypeError, "attempts", _lazy("Retry"), attempts="3"),
    case("Retry-attempts-bool", TypeError, "attempts", _lazy("Retry"), attempts=True),
    case("Retry-backoff-negative", ValueError, "backoff", _lazy("Retry"), backoff=-1),
    case("Retry-backoff-nan", ValueError, "backoff", _lazy("Retry"), backoff=NAN),
    case("Retry-backoff-str", TypeError, "backoff", _lazy("Retry"), backoff="1s"),
    case("Retry-max_delay-inf", ValueError, "max_delay", _lazy("Retry"), max_delay=INF),
    case("Retry-max_delay-none", TypeError, "max_delay", _lazy("Retry"), max_delay=None),
    case("Retry-deadline-zero", ValueError, "deadline", _lazy("Retry"), deadline=0),
    case("Retry-deadline-nan", ValueError, "deadline", _lazy("Retry"), deadline=NAN),
    case("Retry-deadline-inf", ValueError, "deadline", _lazy("Retry"), deadline=INF),
    case("Retry-deadline-bool", TypeError, "deadline", _lazy("Retry"), deadline=True),
    case("Retry-on-str", TypeError, "on", _lazy("Retry"), on="RateLimitError"),
    case("Retry-on-empty", TypeError, "on", _lazy("Retry"), on=[]),
    case("Retry-on-mixed", TypeError, "on", _lazy("Retry"), on=[ValueError, "x"]),
    case("Retry-retry_if_result-not-callable", TypeError, "retry_if_result", _lazy("Retry"),
         retry_if_result=""),
    case("Retry-budget-nan", ValueError, "budget", _lazy("Retry"), budget=NAN),
    case("Retry-budget-negative", ValueError, "budget", _lazy("Retry"), budget=-0.1),
    case("Retry-budget-str", TypeError, "budget", _lazy("Retry"), budget="20%"),
    case("RetryBudget-ratio-nan", ValueError, "ratio", _lazy("RetryBudget"), NAN),
    case("RetryBudget-ratio-huge", ValueError, "ratio", _lazy("RetryBudget"), 1e9),
    case("RetryBudget-ratio-bool", TypeError, "ratio", _lazy("RetryBudget"), True),
    case("RetryBudget-window-zero", ValueError, "window", _lazy("RetryBudget"), window=0),
    case("RetryBudget-window-inf", ValueError, "window", _lazy("RetryBudget"), window=INF),
    case("RetryBudget-min_retries-negative", ValueError, "min_retries", _lazy("RetryBudget"),
         min_retries=-1),
    case("RetryBudget-min_retries-bool", TypeError, "min_retries", _lazy("RetryBudget"),
         min_retries=False),
    case("Fallback-empty", ValueError, "alternate", _lazy("Fallback")),
    case("Fallback-alternate-str", TypeError, "alternate", _lazy("Fallback"), "gpt-4o-mini"),
    case("Fallback-alternate-sync-function", TypeError, "alternate", _lazy("Fallback"), len),
    case("Fallback-alternate-empty-dict", ValueError, "alternate", _lazy("Fallback"), {}),
    case("Fallback-routes-not-a-dict", TypeError, "routes", _lazy("Fallback"), _alternate,
         routes=[_alternate]),
    case("Fallback-routes-key-str", TypeError, "routes", _lazy("Fallback"),
         routes={"rate_limited": _alternate}),
    case("Fallback-on-not-callable", TypeError, "on", _lazy("Fallback"), _alternate,
         on=ValueError("x")),
    case("CircuitBreaker-failure_ratio-zero", ValueError, "failure_ratio",
         _lazy("CircuitBreaker"), failure_ratio=0),
    case("CircuitBreaker-failure_ratio-above-one", ValueError, "failure_ratio",
         _lazy("CircuitBreaker"), failure_ratio=1.5),
    case("CircuitBreaker-failure_ratio-nan", ValueError, "failure_ratio",
         _lazy("CircuitBreaker"), failure_ratio=NAN),
    case("CircuitBreaker-failure_ratio-bool", TypeError, "failure_ratio",
         _lazy("CircuitBreaker"), failure_ratio=True),
    case("CircuitBreaker-min_calls-zero", ValueError, "min_calls", _lazy("CircuitBreaker"),
         min_calls=0),
    case("CircuitBreaker-min_calls-str", TypeError, "min_calls", _lazy("CircuitBreaker"),
         min_calls="20"),
    case("CircuitBreaker-window-negative", ValueError, "window", _lazy("CircuitBreaker"),
         window=-30),
    case("CircuitBreaker-window-inf", ValueError, "window", _lazy("CircuitBreaker"),
         window=INF),
    case("CircuitBreaker-open_for-nan", ValueError, "open_for", _lazy("CircuitBreaker"),
         open_for=NAN),
    case("CircuitBreaker-half_open_calls-fraction", ValueError, "half_open_calls",
         _lazy("CircuitBreaker"), half_open_calls=0.5),
    case("CircuitBreaker-name-empty", ValueError, "name", _lazy("CircuitBreaker"), name=""),
    case("CircuitBreaker-name-int", TypeError, "name", _lazy("CircuitBreaker"), name=7),
    case("CircuitBreaker-backend-wrong-type", TypeError, "backend", _lazy("CircuitBreaker"),
         backend="redis://localhost"),
    case("Metrics-name-empty", ValueError, "name", _lazy("Metrics"), name=""),
    case("Metrics-name-int", TypeError, "name", _lazy("Metrics"), name=1),
    case("Metrics-model-int", TypeError, "model", _lazy("Metrics"), model=4),
    case("Metrics-provider-empty", ValueError, "provider", _lazy("Metrics"), provider=""),
    case("Metrics-operation-none", TypeError, "operation", _lazy("Metrics"), operation=None),
    case("Metrics-meter_provider-wrong-type", TypeError, "meter_provider", _lazy("Metrics"),
         meter_provider="prometheus"),
    case("Metrics-tracer_provider-wrong-type", TypeError, "tracer_provider", _lazy("Metrics"),
         tracer_provider=object()),
    case("Router-no-deployment", ValueError, "deployment", _lazy("Router")),
    case("Router-not-a-deployment", TypeError, "Deployment", _lazy("Router"), _send),
    case("Router-duplicate-name", ValueError, "name", lambda: lg.Router(
        lg.Deployment(_send, name="a"), lg.Deployment({"model": "m"}, name="a"))),
    case("Router-strategy-unknown", ValueError, "strategy", lambda: lg.Router(
        lg.Deployment(_send, name="a"), strategy="fastest")),
    case("Router-max_wait-zero", ValueError, "max_wait", lambda: lg.Router(
        lg.Deployment(_send, name="a"), max_wait=0)),
    case("Router-tokens-not-callable", TypeError, "tokens", lambda: lg.Router(
        lg.Deployment(_send, name="a"), tokens=100)),
    case("Router-backend-wrong-type", TypeError, "backend", lambda: lg.Router(
        lg.Deployment(_send, name="a"), backend="redis://localhost")),
    case("Deployment-target-sync", TypeError, "target", _lazy("Deployment"), print, name="a"),
    case("Deployment-target-empty-dict", ValueError, "target", _lazy("Deployment"), {},
         name="a"),
    case("Deployment-name-missing", TypeError, "name", _lazy("Deployment"), _send, name=None),
    case("Deployment-name-empty", ValueError, "name", _lazy("Deployment"), _send, name=""),
    case("Deployment-rpm-zero", ValueError, "rpm", _lazy("Deployment"), _send, name="a", rpm=0),
    case("Deployment-tpm-inf", ValueError, "tpm", _lazy("Deployment"), _send, name="a",
         tpm=INF),
    case("Deployment-concurrency-fraction", ValueError, "concurrency", _lazy("Deployment"),
         _send, name="a", concurrency=1.5),
    case("Deployment-weight-negative", ValueError, "weight", _lazy("Deployment"), _send,
         name="a", weight=-1),
    case("Deployment-timeout-nan", ValueError, "timeout", _lazy("Deployment"), _send,
         name="a", timeout=NAN),
    case("Deployment-refill-unknown", ValueError, "refill", _lazy("Deployment"), _send,
         name="a", refill="leaky"),
    case("Deployment-circuit-wrong-type", TypeError, "circuit", _lazy("Deployment"), _send,
         name="a", circuit="on"),
    case("Deployment-input_tpm-zero", ValueError, "input_tpm", _lazy("Deployment"), _send,
         name="a", input_tpm=0),
    case("Deployment-burst-above-one", ValueError, "burst", _lazy("Deployment"), _send,
         name="a", rpm=10, burst=2),
    case("Budget-usd-zero", ValueError, "usd", _lazy("Budget"), 0),
    case("Budget-usd-negative", ValueError, "usd", _lazy("Budget"), -5),
    case("Budget-usd-nan", ValueError, "usd", _lazy("Budget"), NAN),
    case("Budget-usd-inf", ValueError, "usd", _lazy("Budget"), INF),
    case("Budget-usd-str", TypeError, "usd", _lazy("Budget"), "50"),
    case("Budget-per-unknown", ValueError, "per", _lazy("Budget"), 5, per="week"),
    case("Budget-soft-above-one", ValueError, "soft", _lazy("Budget"), 5, soft=1.5),
    case("Budget-soft-nan", ValueError, "soft", _lazy("Budget"), 5, soft=NAN),
    case("Budget-key-not-callable", TypeError, "key", _lazy("Budget"), 5, key="tenant"),
    case("Budget-prices-empty", TypeError, "prices", _lazy("Budget"), 5, prices={}),
    case("Budget-prices-negative", ValueError, "prices", _lazy("Budget"), 5,
         prices={"m": (-1.0, 1.0)}),
    case("Budget-prices-nan", ValueError, "prices", _lazy("Budget"), 5, prices={"m": (1.0, NAN)}),
    case("Budget-backend-wrong-type", TypeError, "backend", _lazy("Budget"), 5,
         backend="redis://localhost"),
    case("Budget-name-empty", ValueError, "name", _lazy("Budget"), 5, name=""),
]


@pytest.mark.parametrize("build, args, kwargs, error, arg", LAYER_CASES)
def test_layer_constructors_reject_bad_arguments(build, args, kwargs, error, arg) -> None:
    """Each resilience layer refuses a bad argument at construction, naming it."""
    _raises(build, args, kwargs, error, arg)


@pytest.mark.parametrize("arg", ["seconds", "first_chunk", "idle", "total"])
@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), (NAN, ValueError),
                                          (INF, ValueError), ("30", TypeError), (True, TypeError)],
                         ids=["zero", "negative", "nan", "inf", "str", "bool"])
def test_timeout_rejects_bad_limits(arg, value, error) -> None:
    """Each of Timeout's limits refuses anything but a finite number > 0, naming itself; a
    Timeout with no limit at all says which arguments it takes."""
    with pytest.raises(error, match=rf"\b{arg}\b"):
        lg.Timeout(**{arg: value})
    with pytest.raises(ValueError, match="seconds.*first_chunk"):
        lg.Timeout()


def test_huge_finite_settings_are_accepted() -> None:
    """Huge but finite values are legitimate (a very patient retry, a very long cache)."""
    assert lg.Retry(attempts=10**9, max_delay=1e9, deadline=1e12).attempts == 10**9
    assert lg.Cache(ttl=1e12, maxsize=10**12).ttl == 1e12
    assert lg.CircuitBreaker(min_calls=10**9, window=1e9, open_for=1e9)
    assert lg.RetryBudget(10, window=1e9, min_retries=10**9).ratio == 10


# --- Pipeline, guard, builder methods, wrap_client ------------------------------------------


def _pipeline_method(method: str) -> Any:
    return lambda *args, **kwargs: getattr(lg.Pipeline(), method)(*args, **kwargs)


def _twice() -> Any:
    retry = lg.Retry()
    return lg.Pipeline(retry, retry)


class _Client:
    async def send_message(self, prompt: str) -> str:
        return prompt

    def send_sync(self, prompt: str) -> str:
        return prompt


PIPELINE_CASES = [
    case("Pipeline-name-empty", ValueError, "name", lg.Pipeline, name=""),
    case("Pipeline-name-int", TypeError, "name", lg.Pipeline, name=42),
    case("Pipeline-layer-class", TypeError, "Retry", lambda: lg.Pipeline(lg.Retry)),
    case("Pipeline-layer-str", TypeError, "layer", lg.Pipeline, "retry"),
    case("Pipeline-layer-none", TypeError, "layer", lg.Pipeline, None),
    case("Pipeline-layer-pipeline", TypeError, "Pipeline", lg.Pipeline, lg.Pipeline()),
    case("Pipeline-layer-twice", ValueError, "layer", _twice),
    case("guard-name-empty", ValueError, "name", lg.guard, name=""),
    case("guard-layer-sync-function", TypeError, "layer", lg.guard, len),
    case("then-layer-str", TypeError, "layer", _pipeline_method("then"), "cache"),
    case("wrap-sync-function", TypeError, "async", _pipeline_method("wrap"), len),
    case("wrap-none", TypeError, "async", _pipeline_method("wrap"), None),
    case("builder-retry-attempts-zero", ValueError, "attempts", _pipeline_method("retry"),
         attempts=0),
    case("builder-retry-unknown-option", TypeError, "attemps", _pipeline_method("retry"),
         attemps=3),
    case("builder-cache-ttl-nan", ValueError, "ttl", _pipeline_method("cache"), ttl=NAN),
    case("builder-rate_limit-rpm-str", TypeError, "rpm", _pipeline_method("rate_limit"),
         rpm="500"),
    case("builder-concurrency_limit-limit-zero", ValueError, "limit",
         _pipeline_method("concurrency_limit"), 0),
    case("builder-adaptive_concurrency-max-zero", ValueError, "max",
         _pipeline_method("adaptive_concurrency"), max=0),
    case("builder-circuit_breaker-window-inf", ValueError, "window",
         _pipeline_method("circuit_breaker"), window=INF),
    case("builder-fallback-empty", ValueError, "alternate", _pipeline_method("fallback")),
    case("builder-metrics-operation-empty", ValueError, "operation",
         _pipeline_method("metrics"), operation=""),
    case("builder-timeout-seconds-nan", ValueError, "seconds", _pipeline_method("timeout"),
         NAN),
    case("wrap_client-missing-method", AttributeError, "method", lg.wrap_client, _Client(),
         "chat", lg.Pipeline()),
    case("wrap_client-missing-nested-method", AttributeError, "method", lg.wrap_client,
         _Client(), "chat.completions.create", lg.Pipeline()),
    case("wrap_client-method-not-str", TypeError, "method", lg.wrap_client, _Client(),
         _Client.send_message, lg.Pipeline()),
    case("wrap_client-method-empty", ValueError, "method", lg.wrap_client, _Client(), "",
         lg.Pipeline()),
    case("wrap_client-pipeline-wrong-type", TypeError, "pipeline", lg.wrap_client, _Client(),
         "send_message", 3),
    case("wrap_client-sync-method", TypeError, "async", lg.wrap_client, _Client(), "send_sync",
         lg.Pipeline()),
]


@pytest.mark.parametrize("build, args, kwargs, error, arg", PIPELINE_CASES)
def test_pipeline_forms_reject_bad_arguments(build, args, kwargs, error, arg) -> None:
    """Pipeline, guard, every builder method and wrap_client fail when built, not when called."""
    _raises(build, args, kwargs, error, arg)


# --- AgentPool, batch / batch_iter, JobManager, serve_metrics --------------------------------


async def _agent(prompt: str) -> str:
    return prompt


POOL_CASES = [
    case("AgentPool-members-empty", ValueError, "members", _lazy("AgentPool"), []),
    case("AgentPool-members-int", TypeError, "members", _lazy("AgentPool"), 3),
    case("AgentPool-members-str", TypeError, "members", _lazy("AgentPool"), "agents"),
    case("AgentPool-members-none", TypeError, "members", _lazy("AgentPool"), None),
    case("AgentPool-member-none", TypeError, "members", _lazy("AgentPool"), [None]),
    case("AgentPool-per_member-zero", ValueError, "per_member", _lazy("AgentPool"), [_agent],
         per_member=0),
    case("AgentPool-per_member-nan", ValueError, "per_member", _lazy("AgentPool"), [_agent],
         per_member=NAN),
    case("AgentPool-per_member-bool", TypeError, "per_member", _lazy("AgentPool"), [_agent],
         per_member=True),
    case("AgentPool-strategy-unknown", ValueError, "strategy", _lazy("AgentPool"), [_agent],
         strategy="random"),
    case("AgentPool-method-int", TypeError, "method", _lazy("AgentPool"), [_agent], method=1),
    case("AgentPool-method-empty", ValueError, "method", _lazy("AgentPool"), [_agent],
         method=""),
    case("AgentPool-weights-without-weighted", ValueError, "weights", _lazy("AgentPool"),
         [_agent], weights=[1]),
    case("AgentPool-weights-length", ValueError, "weights", _lazy("AgentPool"), [_agent],
         strategy="weighted", weights=[1, 2]),
    case("AgentPool-weights-inf", ValueError, "weights", _lazy("AgentPool"), [_agent],
         strategy="weighted", weights=[INF]),
    case("AgentPool-weights-nan", ValueError, "weights", _lazy("AgentPool"), [_agent],
         strategy="weighted", weights=[NAN]),
    case("AgentPool-weights-str", TypeError, "weights", _lazy("AgentPool"), [_agent],
         strategy="weighted", weights=["1"]),
    case("AgentPool-cooldown-zero", ValueError, "cooldown", _lazy("AgentPool"), [_agent],
         cooldown=0),
    case("AgentPool-cooldown-inf", ValueError, "cooldown", _lazy("AgentPool"), [_agent],
         cooldown=INF),
    case("AgentPool-cooldown-bool", TypeError, "cooldown", _lazy("AgentPool"), [_agent],
         cooldown=True),
    case("JobManager-ttl-zero", ValueError, "ttl", _lazy("JobManager"), ttl=0),
    case("JobManager-ttl-inf", ValueError, "ttl", _lazy("JobManager"), ttl=INF),
    case("JobManager-ttl-str", TypeError, "ttl", _lazy("JobManager"), ttl="1h"),
    case("JobManager-max_jobs-zero", ValueError, "max_jobs", _lazy("JobManager"), max_jobs=0),
    case("JobManager-max_jobs-fraction", ValueError, "max_jobs", _lazy("JobManager"),
         max_jobs=2.5),
    case("JobManager-max_jobs-bool", TypeError, "max_jobs", _lazy("JobManager"),
         max_jobs=True),
    case("serve_metrics-port-negative", ValueError, "port", _lazy("serve_metrics"), -1),
    case("serve_metrics-port-too-big", ValueError, "port", _lazy("serve_metrics"), 70_000),
    case("serve_metrics-port-nan", ValueError, "port", _lazy("serve_metrics"), NAN),
    case("serve_metrics-port-str", TypeError, "port", _lazy("serve_metrics"), "9464"),
    case("serve_metrics-port-bool", TypeError, "port", _lazy("serve_metrics"), True),
    case("serve_metrics-addr-int", TypeError, "addr", _lazy("serve_metrics"), 0, 127),
    case("serve_metrics-addr-empty", ValueError, "addr", _lazy("serve_metrics"), 0, ""),
]


@pytest.mark.parametrize("build, args, kwargs, error, arg", POOL_CASES)
def test_pool_jobs_and_exporter_reject_bad_arguments(build, args, kwargs, error, arg) -> None:
    """AgentPool, JobManager and serve_metrics refuse a bad argument before doing anything."""
    _raises(build, args, kwargs, error, arg)


def _batch_cases(tmp: str) -> list[Any]:
    return [
        ("concurrency-zero", ValueError, "concurrency", [1], {"concurrency": 0}),
        ("concurrency-negative", ValueError, "concurrency", [1], {"concurrency": -1}),
        ("concurrency-nan", ValueError, "concurrency", [1], {"concurrency": NAN}),
        ("concurrency-inf", ValueError, "concurrency", [1], {"concurrency": INF}),
        ("concurrency-str", TypeError, "concurrency", [1], {"concurrency": "4"}),
        ("concurrency-bool", TypeError, "concurrency", [1], {"concurrency": True}),
        ("concurrency-misspelt", TypeError, "concurency", [1], {"concurency": 4}),
        ("grace-negative", ValueError, "grace", [1], {"grace": -1}),
        ("grace-nan", ValueError, "grace", [1], {"grace": NAN}),
        ("grace-inf", ValueError, "grace", [1], {"grace": INF}),
        ("grace-bool", TypeError, "grace", [1], {"grace": True}),
        ("items-int", TypeError, "items", 5, {}),
        ("items-none", TypeError, "items", None, {}),
        ("key-not-callable", TypeError, "key", [1], {"key": "id"}),
        ("on_result-not-callable", TypeError, "on_result", [1], {"on_result": 1}),
        ("checkpoint-int", TypeError, "checkpoint", [1], {"checkpoint": 5}),
        ("checkpoint-empty", ValueError, "checkpoint", [1], {"checkpoint": ""}),
        ("checkpoint-directory", ValueError, "checkpoint", [1], {"checkpoint": tmp}),
        ("checkpoint-missing-directory", ValueError, "checkpoint", [1],
         {"checkpoint": f"{tmp}/no/such/dir/run.jsonl"}),
        ("dead_letter-without-checkpoint", ValueError, "dead_letter", [1],
         {"dead_letter": f"{tmp}/dead.jsonl"}),
        ("dead_letter-directory", ValueError, "dead_letter", [1],
         {"checkpoint": f"{tmp}/run.jsonl", "dead_letter": tmp}),
    ]


BATCH_IDS = [row[0] for row in _batch_cases("/tmp")]


@pytest.mark.parametrize("index", range(len(BATCH_IDS)), ids=BATCH_IDS)
async def test_batch_rejects_bad_arguments_before_running_any_item(index, tmp_path) -> None:
    """batch(), batch_iter() (at the call) and JobManager.submit_batch() (at submission, not
    inside the background job) refuse bad options before calling fn once."""
    _, error, arg, items, options = _batch_cases(str(tmp_path))[index]
    calls: list[Any] = []

    async def fn(item: Any) -> Any:
        calls.append(item)
        return item

    pattern = rf"(?<![\w.]){re.escape(arg)}\b"
    with pytest.raises(error, match=pattern):
        await lg.batch(fn, items, progress=False, **options)
    with pytest.raises(error, match=pattern):
        lg.batch_iter(fn, items, progress=False, **options)
    with pytest.raises(error, match=pattern):
        lg.JobManager().submit_batch(fn, items, progress=False, **options)
    assert calls == []
    assert not (tmp_path / "run.jsonl").exists()  # no checkpoint file left behind


async def test_batch_of_nothing_is_an_empty_result() -> None:
    """An empty items list is valid input: no outcomes, no error."""
    assert await lg.batch(_agent, [], progress=False) == []


# --- test doubles, Redis backends (no server needed to validate), integrations ---------------


def _testing(name: str) -> Any:
    def build(*args: Any, **kwargs: Any) -> Any:
        from llmguard import testing

        return getattr(testing, name)(*args, **kwargs)

    return build


def _redis(name: str) -> Any:
    """Build ``llmguard.backends.redis.<name>``; a ``backend`` argument of "ok" becomes a
    RedisBackend at a port nothing listens on: construction must not connect."""
    def build(*args: Any, **kwargs: Any) -> Any:
        from llmguard.backends import redis

        if args and args[0] == "ok":
            args = (redis.RedisBackend("redis://127.0.0.1:1/0"), *args[1:])
        return getattr(redis, name)(*args, **kwargs)

    return build


def _integration(module: str, name: str) -> Any:
    def build(*args: Any, **kwargs: Any) -> Any:
        from importlib import import_module

        return getattr(import_module(f"llmguard.integrations.{module}"), name)(*args, **kwargs)

    return build


DOUBLE_CASES = [
    case("FakeLLM-latency-negative", ValueError, "latency", _testing("FakeLLM"), latency=-1),
    case("FakeLLM-latency-nan", ValueError, "latency", _testing("FakeLLM"), latency=NAN),
    case("FakeLLM-latency-inf", ValueError, "latency", _testing("FakeLLM"), latency=INF),
    case("FakeLLM-latency-str", TypeError, "latency", _testing("FakeLLM"), latency="1"),
    case("FakeLLM-seconds_per_token-nan", ValueError, "seconds_per_token", _testing("FakeLLM"),
         seconds_per_token=NAN),
    case("FakeLLM-script-str", TypeError, "script", _testing("FakeLLM"), "hello"),
    case("FakeLLM-script-int", TypeError, "script", _testing("FakeLLM"), 3),
    case("FakeLLM-model-empty", ValueError, "model", _testing("FakeLLM"), model=""),
    case("FakeLLM-reply_prefix-none", TypeError, "reply_prefix", _testing("FakeLLM"),
         reply_prefix=None),
    case("SimulatedProvider-capacity-zero", ValueError, "capacity",
         _testing("SimulatedProvider"), capacity=0),
    case("SimulatedProvider-capacity-bool", TypeError, "capacity",
         _testing("SimulatedProvider"), capacity=True),
    case("SimulatedProvider-capacity-inf", ValueError, "capacity",
         _testing("SimulatedProvider"), capacity=INF),
    case("SimulatedProvider-latency-nan", ValueError, "latency",
         _testing("SimulatedProvider"), latency=NAN),
    case("SimulatedProvider-latency-negative", ValueError, "latency",
         _testing("SimulatedProvider"), latency=-0.1),
    case("SimulatedProvider-rpm-zero", ValueError, "rpm", _testing("SimulatedProvider"), rpm=0),
    case("SimulatedProvider-tpm-bool", TypeError, "tpm", _testing("SimulatedProvider"),
         tpm=True),
    case("SimulatedProvider-window-inf", ValueError, "window", _testing("SimulatedProvider"),
         window=INF),
    case("SimulatedProvider-overload_at-zero", ValueError, "overload_at",
         _testing("SimulatedProvider"), overload_at=0),
    case("SimulatedProvider-output_tokens-negative", ValueError, "output_tokens",
         _testing("SimulatedProvider"), output_tokens=-1),
    case("SimulatedProvider-output_tokens-str", TypeError, "output_tokens",
         _testing("SimulatedProvider"), output_tokens="64"),
    case("SimulatedProvider-seed-str", TypeError, "seed", _testing("SimulatedProvider"),
         seed="x"),
    case("Faults-error_rate-above-one", ValueError, "error_rate", _testing("Faults"),
         error_rate=1.5),
    case("Faults-error_rate-negative", ValueError, "error_rate", _testing("Faults"),
         error_rate=-0.1),
    case("Faults-error_rate-nan", ValueError, "error_rate", _testing("Faults"),
         error_rate=NAN),
    case("Faults-error_rate-bool", TypeError, "error_rate", _testing("Faults"),
         error_rate=True),
    case("Faults-spike_rate-str", TypeError, "spike_rate", _testing("Faults"),
         spike_rate="10%"),
    case("Faults-hang_rate-inf", ValueError, "hang_rate", _testing("Faults"), hang_rate=INF),
    case("Faults-truncate_rate-above-one", ValueError, "truncate_rate", _testing("Faults"),
         truncate_rate=2),
    case("Faults-retry_after-nan", ValueError, "retry_after", _testing("Faults"),
         retry_after=NAN),
    case("Faults-spike-negative", ValueError, "spike", _testing("Faults"), spike=-1),
    case("Faults-storm_for-zero", ValueError, "storm_for", _testing("Faults"), storm_for=0),
    case("Faults-storm_every-nan", ValueError, "storm_every", _testing("Faults"),
         storm_every=NAN),
    case("Faults-storm_every-not-above-storm_for", ValueError, "storm_every",
         _testing("Faults"), storm_every=5, storm_for=5),
    case("Faults-kinds-empty", ValueError, "kinds", _testing("Faults"), kinds={}),
    case("Faults-kinds-not-a-dict", TypeError, "kinds", _testing("Faults"),
         kinds=["rate_limited"]),
    case("Faults-kinds-str-key", TypeError, "kinds", _testing("Faults"),
         kinds={"rate_limited": 1}),
    case("Faults-kinds-nan-weight", ValueError, "kinds", _testing("Faults"),
         kinds={lg.FailureKind.RATE_LIMITED: NAN}),
    case("Faults-seed-float", TypeError, "seed", _testing("Faults"), seed=1.5),
    case("Faults-seed-list", TypeError, "seed", _testing("Faults"), seed=[1]),
    case("Retry-seed-str", TypeError, "seed", _lazy("Retry"), seed="abc"),
    case("RedisBackend-url-int", TypeError, "url", _redis("RedisBackend"), 6379),
    case("RedisBackend-url-none", TypeError, "url", _redis("RedisBackend"), None),
    case("RedisBackend-url-no-scheme", ValueError, "url", _redis("RedisBackend"),
         "localhost:6379"),
    case("RedisBackend-url-empty", ValueError, "url", _redis("RedisBackend"), ""),
    case("RedisBackend-prefix-empty", ValueError, "prefix", _redis("RedisBackend"), prefix=""),
    case("RedisBackend-prefix-int", TypeError, "prefix", _redis("RedisBackend"), prefix=1),
    case("RedisBackend-on_error-unknown", ValueError, "on_error", _redis("RedisBackend"),
         on_error="ignore"),
    case("RedisBackend-timeout-zero", ValueError, "timeout", _redis("RedisBackend"), timeout=0),
    case("RedisBackend-timeout-nan", ValueError, "timeout", _redis("RedisBackend"),
         timeout=NAN),
    case("RedisBackend-timeout-inf", ValueError, "timeout", _redis("RedisBackend"),
         timeout=INF),
    case("RedisBackend-timeout-str", TypeError, "timeout", _redis("RedisBackend"),
         timeout="0.5"),
    case("RedisConcurrencyLimiter-backend-url", TypeError, "backend",
         _redis("RedisConcurrencyLimiter"), "redis://127.0.0.1:6379/0", 8),
    case("RedisConcurrencyLimiter-limit-zero", ValueError, "limit",
         _redis("RedisConcurrencyLimiter"), "ok", 0),
    case("RedisConcurrencyLimiter-limit-str", TypeError, "limit",
         _redis("RedisConcurrencyLimiter"), "ok", "8"),
    case("RedisConcurrencyLimiter-lease-nan", ValueError, "lease",
         _redis("RedisConcurrencyLimiter"), "ok", 8, lease=NAN),
    case("RedisConcurrencyLimiter-lease-inf", ValueError, "lease",
         _redis("RedisConcurrencyLimiter"), "ok", 8, lease=INF),
    case("RedisConcurrencyLimiter-max_wait-negative", ValueError, "max_wait",
         _redis("RedisConcurrencyLimiter"), "ok", 8, max_wait=-1),
    case("RedisConcurrencyLimiter-max_wait-str", TypeError, "max_wait",
         _redis("RedisConcurrencyLimiter"), "ok", 8, max_wait="5"),
    case("RedisConcurrencyLimiter-max_queue-zero", ValueError, "max_queue",
         _redis("RedisConcurrencyLimiter"), "ok", 8, max_queue=0),
    case("RedisConcurrencyLimiter-name-empty", ValueError, "name",
         _redis("RedisConcurrencyLimiter"), "ok", 8, name=""),
    case("RedisStore-backend-none", TypeError, "backend", _redis("RedisStore"), None),
    case("RedisStore-max_bytes-zero", ValueError, "max_bytes", _redis("RedisStore"), "ok",
         max_bytes=0),
    case("RedisStore-max_bytes-float", ValueError, "max_bytes", _redis("RedisStore"), "ok",
         max_bytes=1e6),
    case("RedisStore-lock_ttl-negative", ValueError, "lock_ttl", _redis("RedisStore"), "ok",
         lock_ttl=-1),
    case("RedisStore-lock_ttl-nan", ValueError, "lock_ttl", _redis("RedisStore"), "ok",
         lock_ttl=NAN),
    case("RedisStore-lock_ttl-absurd", ValueError, "lock_ttl", _redis("RedisStore"), "ok",
         lock_ttl=1e300),
    # Issue #35 item 5: accepted, then broken at run time (Lua errors, busy loops, no caching).
    case("RedisConcurrencyLimiter-lease-absurd", ValueError, "lease",
         _redis("RedisConcurrencyLimiter"), "ok", 1, lease=1e300),
    case("RedisConcurrencyLimiter-lease-tiny", ValueError, "lease",
         _redis("RedisConcurrencyLimiter"), "ok", 1, lease=1e-6),
    case("RedisConcurrencyLimiter-lease-zero", ValueError, "lease",
         _redis("RedisConcurrencyLimiter"), "ok", 1, lease=0),
    case("RedisBackend-timeout-tiny", ValueError, "timeout", _redis("RedisBackend"),
         timeout=1e-9),
    case("RedisBackend-timeout-absurd", ValueError, "timeout", _redis("RedisBackend"),
         timeout=1e300),
    case("Cache-ttl-absurd-with-RedisStore", ValueError, "ttl",
         lambda **kw: lg.Cache(store=_redis("RedisStore")("ok"), **kw), ttl=1e300),
    case("RedisStore-serializer-unknown", ValueError, "serializer", _redis("RedisStore"), "ok",
         serializer="xml"),
    case("RedisStore-serializer-wrong-type", TypeError, "serializer", _redis("RedisStore"),
         "ok", serializer=5),
    case("RedisStore-namespace-empty", ValueError, "namespace", _redis("RedisStore"), "ok",
         namespace=""),
    case("litellm-completion-pipeline-wrong-type", TypeError, "pipeline",
         _integration("litellm", "completion"), [lg.Retry()]),
    case("litellm-embedding-pipeline-wrong-type", TypeError, "pipeline",
         _integration("litellm", "embedding"), "retry"),
    case("openai-wrap-pipeline-wrong-type", TypeError, "pipeline",
         _integration("openai", "wrap"), object(), None),
    case("openai-wrap-client-wrong-type", TypeError, "client", _integration("openai", "wrap"),
         object(), lg.Pipeline()),
    case("openai-guard-pipeline-wrong-type", TypeError, "pipeline",
         _integration("openai", "guard"), _agent, "retry"),
    case("openai-guard-method-wrong-type", TypeError, "method",
         _integration("openai", "guard"), _agent, lg.Pipeline()),
]


@pytest.mark.parametrize("build, args, kwargs, error, arg", DOUBLE_CASES)
def test_doubles_backends_and_integrations_reject_bad_arguments(
        build, args, kwargs, error, arg) -> None:
    """Test doubles, Redis objects and integration entry points refuse a bad argument at
    construction; the Redis ones without contacting a server."""
    _raises(build, args, kwargs, error, arg)


def test_ranges_are_named_in_the_errors() -> None:
    """The error says the accepted range, not only that the value is wrong."""
    from llmguard.backends import redis

    backend = redis.RedisBackend("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match=r"lease must be a number of seconds in \[0\.1, 86400\]"):
        redis.RedisConcurrencyLimiter(backend, 1, lease=1e300)
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds in \[0\.01, 3600\]"):
        redis.RedisBackend(timeout=1e-9)
    with pytest.raises(ValueError, match=r"ttl must be at most 1e\+09 seconds with RedisStore"):
        lg.Cache(ttl=1e300, store=redis.RedisStore(backend))
    assert lg.Cache(ttl=1e12).ttl == 1e12  # in memory a huge ttl just means "for ever"


# --- per-call values: checked at the call, failing that call alone ---------------------------


def _nan_estimate(prompt: str, tokens: float = 0.0) -> float:
    return tokens


@pytest.mark.parametrize("tokens, error", [
    (float("nan"), ValueError), (float("inf"), ValueError), (-5, ValueError),
    (-0.5, ValueError), ("12", TypeError), (None, TypeError)],
    ids=["nan", "inf", "negative", "negative-float", "str", "none"])
async def test_a_bad_token_estimate_fails_that_call_and_never_blocks_the_line(
        tokens: Any, error: type[Exception]) -> None:
    """A ``tokens=`` callable returning NaN, inf, a negative or a non-number fails that call at
    once with an error naming ``tokens=`` (a NaN waited at the head of the line for ever, and
    every caller of its key behind it); the calls around it are admitted as usual."""
    import asyncio

    limit = lg.RateLimit(tpm=1000, tokens=lambda prompt, tokens=10: tokens)
    sent: list[str] = []

    async def send(prompt: str, tokens: Any = 10) -> str:
        sent.append(prompt)
        return prompt

    guarded = lg.guard(limit)(send)
    results = await asyncio.gather(guarded("before"), guarded("bad", tokens=tokens),
                                   guarded("after"), return_exceptions=True)
    assert results[0] == "before" and results[2] == "after"
    assert type(results[1]) is error and "RateLimit(tokens=...)" in str(results[1])
    assert sent == ["before", "after"]
    s = limit.statistics()
    assert s.waiting == 0 and s.in_flight == 0 and s.reserved_tokens == 0


async def test_a_negative_max_tokens_fails_the_call_instead_of_reserving_negative_tokens() -> None:
    """``max_tokens=-100000`` under the default estimate fails that call naming max_tokens: it
    made a negative reservation, and 4,980 tokens reached the provider in a minute against
    tpm=1,000."""
    from llmguard.testing import FixedWindowServer

    server = FixedWindowServer(tpm=1000, latency=0.1)
    guarded = lg.guard(lg.RateLimit(tpm=1000))(server.acompletion)
    with pytest.raises(ValueError, match=r"max_tokens=-100000 is negative"):
        await guarded(messages=[{"role": "user", "content": "hi"}], max_tokens=-100000)
    assert not server.arrivals
    with pytest.raises(ValueError, match=r"max_tokens"):
        lg.estimate_tokens(messages=[], max_tokens=-1)


async def test_a_bad_usage_keeps_the_estimate_and_the_answer() -> None:
    """A ``usage=`` callable returning NaN after the provider answered keeps the (paid) answer
    and the reservation as made (the estimate times ``OPENING``: the server said nothing of
    what it counts), instead of corrupting the window."""
    limit = lg.RateLimit(tpm=1000, tokens=lambda prompt: 100, usage=lambda result: float("nan"))

    async def send(prompt: str) -> str:
        return prompt

    assert await lg.guard(limit)(send)("kept") == "kept"
    s = limit.statistics()
    assert s.in_flight == 0 and s.reserved_tokens == 0
    assert limit.backend.headroom(None, limit.quotas)[1] == 1000 - math.ceil(100 * OPENING)


# --- llmguard run ----------------------------------------------------------------------------


def _run_cli(tmp_path: Any, capsys: Any, *args: str) -> tuple[int, str]:
    """``llmguard run ARGS`` in this process: (exit code, stderr)."""
    from llmguard.cli import main

    try:
        code = main(["run", *args])
    except SystemExit as exc:  # argparse refuses an option
        code = exc.code  # type: ignore[assignment]
    return code, capsys.readouterr().err


CLI_CASES = [
    # (id, extra arguments, text the error must contain)
    ("concurrency-zero", ["--concurrency", "0"], "--concurrency: must be > 0"),
    ("concurrency-negative", ["--concurrency", "-1"], "--concurrency: must be > 0"),
    ("concurrency-nan", ["--concurrency", "nan"], "--concurrency: expected an integer"),
    ("concurrency-abc", ["--concurrency", "abc"], "--concurrency: expected an integer"),
    ("concurrency-fraction", ["--concurrency", "2.5"], "--concurrency: expected an integer"),
    ("rpm-zero", ["--rpm", "0"], "--rpm: must be > 0"),
    ("rpm-negative", ["--rpm", "-1"], "--rpm: must be > 0"),
    ("rpm-nan", ["--rpm", "nan"], "--rpm: expected an integer"),
    ("rpm-inf", ["--rpm", "inf"], "--rpm: expected an integer"),
    ("rpm-abc", ["--rpm", "abc"], "--rpm: expected an integer"),
    ("tpm-empty", ["--tpm", ""], "--tpm: expected an integer"),
    ("burst-above-one", ["--rpm", "60", "--burst", "2"], "burst must be"),
    ("burst-without-quota", ["--burst", "0.5"], "--burst"),
    ("burst-nan", ["--rpm", "60", "--burst", "nan"], "--burst: must be > 0"),
    ("margin-negative", ["--rpm", "60", "--margin", "-1"], "--margin: must be >= 0"),
    ("timeout-zero", ["--timeout", "0"], "--timeout: must be > 0"),
    ("timeout-inf", ["--timeout", "inf"], "--timeout: must be > 0"),
    ("retries-negative", ["--retries", "-1"], "--retries: must be >= 0"),
    ("cache-ttl-nan", ["--cache-ttl", "nan"], "--cache-ttl: must be > 0"),
    ("grace-negative", ["--grace", "-1"], "--grace: must be >= 0"),
    ("metrics-port-zero", ["--metrics-port", "0"], "--metrics-port: must be > 0"),
    ("metrics-port-too-big", ["--metrics-port", "70000"], "--metrics-port: must be at most"),
    ("retry-failed-without-resume", ["--retry-failed"], "--retry-failed needs --resume"),
    ("max-cost-zero", ["--max-cost", "0"], "--max-cost: must be > 0"),
    ("max-cost-nan", ["--max-cost", "nan"], "--max-cost: must be > 0"),
    ("price-without-max-cost", ["--price", "1,2"], "--price prices the calls for --max-cost"),
    ("price-one-number", ["--max-cost", "1", "--price", "1"], "--price: expected IN,OUT"),
    ("api-key-env-count", [ "--model", "m", "--api-base", "http://a:1/v1", "--api-base", "http://b:2/v1", "--api-key-env", "A"],
     "2 --api-base but 1 --api-key-env: give --api-key-env once per --api-base"),
    ("rpm-count", [ "--model", "m", "--api-base", "http://a:1/v1", "--api-base", "http://b:2/v1", "--rpm", "60"], "2 --api-base but 1 --rpm"),
    ("api-key-several-bases", [ "--model", "m", "--api-base", "http://a:1/v1", "--api-base", "http://b:2/v1", "--api-key", "sk-1"], "--api-key is one key"),
    ("same-deployment-twice", ["--model", "m", "--api-base", "http://a:1/v1", "--api-base",
                               "http://a:1/v2"], "name the same deployment 'a:1'"),
    ("rpm-twice-one-base", ["--rpm", "5", "--rpm", "6"], "--rpm is given 2 times for one"),
    ("config-and-rpm", ["--config", "d.toml", "--rpm", "5"],
     "--rpm goes in each [[deployments]] table of --config d.toml"),
    ("config-missing", ["--config", "missing.toml"], "cannot read config 'missing.toml'"),
    ("strategy-alone", ["--strategy", "ordered"], "--strategy chooses among deployments"),
    ("batch-api-several-bases", ["--batch-api", "--model", "m", "--api-base", "http://a:1/v1",
                                 "--api-base", "http://b:2/v1"],
     "--batch-api sends the lines to one provider's batch API: it does not go with several "
     "--api-base or --config"),
]


@pytest.mark.parametrize("extra, message", [row[1:] for row in CLI_CASES],
                         ids=[row[0] for row in CLI_CASES])
def test_cli_rejects_bad_options_before_running(extra, message, tmp_path, capsys) -> None:
    """A bad option exits 2 naming the option, before any line runs or OUTPUT is created."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    code, err = _run_cli(tmp_path, capsys, str(src), "-o", str(tmp_path / "out.jsonl"), *extra)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_refuses_batch_api_over_a_config_of_deployments(tmp_path, capsys) -> None:
    """--batch-api with a --config file of deployments exits 2 naming both, before anything
    runs (a batch goes to one provider's batch API)."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (tmp_path / "d.toml").write_text('[[deployments]]\nname = "a"\nprovider = "fake"\n')
    code, err = _run_cli(tmp_path, capsys, str(src), "-o", str(tmp_path / "out.jsonl"),
                         "--batch-api", "--config", str(tmp_path / "d.toml"))
    assert code == 2 and "--batch-api" in err and "--config" in err, err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_cli_refuses_an_input_file_without_requests(content, tmp_path, capsys) -> None:
    """An empty (or all-blank) INPUT is a usage error naming the file, not a silent success."""
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    code, err = _run_cli(tmp_path, capsys, str(src), "-o", str(tmp_path / "out.jsonl"))
    assert code == 2 and "in.jsonl" in err and "no requests" in err, err


@pytest.mark.parametrize("name", ["missing.jsonl", "."], ids=["missing", "directory"])
def test_cli_refuses_a_missing_input_file(name, tmp_path, capsys) -> None:
    """A missing INPUT (or a directory) exits 2 naming it."""
    code, err = _run_cli(tmp_path, capsys, str(tmp_path / name), "-o", str(tmp_path / "o.jsonl"))
    assert code == 2 and "input file" in err and str(tmp_path / name) in err, err


def test_cli_malformed_jsonl_lines_are_recorded_and_nothing_is_lost(tmp_path, capsys) -> None:
    """Every non-blank input line ends as exactly one record: malformed ones (bad JSON, not an
    object, no messages, truncated last line, invalid UTF-8) as error records naming their line
    number, while the good lines around them still run; the exit code is 1."""
    import json

    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"messages": [{"role": "user", "content": "one"}]}\n'
        b"{not json\n"
        b"[1, 2]\n"
        b'{"messages": []}\n'
        b"\n"
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}\n'
        b'"just a string"\n'
        b'{"messages": [{"role": "user", "content": "seven"}]}\n'
        b'{"messages": [{"role": "user", "content": "truncated"'
    )
    out = tmp_path / "out.jsonl"
    code, err = _run_cli(tmp_path, capsys, str(src), "-o", str(out), "--no-progress")
    assert code == 1, err
    by_line = {r["line"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(by_line) == [1, 2, 3, 4, 6, 7, 8, 9]  # the blank line 5 is no request
    assert by_line[1]["ok"] and by_line[8]["ok"]
    assert by_line[6]["ok"]  # undecodable bytes are replaced, the request still runs
    for line in (2, 3, 4, 7, 9):
        assert by_line[line]["error"]["kind"] == "invalid_input"
        assert f"line {line}" in by_line[line]["error"]["message"]
