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


def _lazy(name: str) -> Any:
    """A public name resolved at call time (layer modules load lazily)."""
    return lambda *args, **kwargs: getattr(lg, name)(*args, **kwargs)


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
    case("RateLimit-burst-zero", ValueError, "burst", _lazy("RateLimit"), rpm=10, burst=0),
    case("RateLimit-burst-above-one", ValueError, "burst", _lazy("RateLimit"), rpm=10, burst=2),
    case("RateLimit-burst-nan", ValueError, "burst", _lazy("RateLimit"), rpm=10, burst=NAN),
    case("RateLimit-burst-str", TypeError, "burst", _lazy("RateLimit"), rpm=10, burst="0.1"),
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
    case("Gradient-probe_every-fraction", ValueError, "probe_every", _lazy("Gradient"),
         probe_every=2.5),
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
    for name in ("AIMD", "Vegas", "Gradient2", "Gradient"):
        assert math.isfinite(getattr(lg, name)().limit)
