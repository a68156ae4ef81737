"""The stack recipe: one spec of the options, validated, built into the recommended order."""

from __future__ import annotations

from dataclasses import replace

import pytest

import llmguard as lg
from llmguard._pipeline.stack import CHECKS, StackSpec, build_stack, stack_options


def kinds(pipeline: lg.Pipeline) -> list[str]:
    return [type(layer).__name__ for layer in pipeline.layers]


def test_every_option_is_checked_and_a_bad_one_is_named() -> None:
    """Each option has a check; a bad value raises naming the option and what it takes."""
    assert set(CHECKS) == set(stack_options())
    for option, bad in (("rpm", 0), ("retries", -1), ("refill", "daily"), ("charge", "some"),
                        ("timeout", 0), ("adaptive", "yes"), ("fallbacks", ["m"]),
                        ("margin", -1), ("cache_ttl", float("inf"))):
        with pytest.raises((TypeError, ValueError), match=option):
            StackSpec(**{option: bad})


def test_a_full_spec_builds_the_recommended_order() -> None:
    """Every option on: Metrics, Cache, Fallback, Retry, CircuitBreaker, Timeout, RateLimit,
    ConcurrencyLimit, outermost first; each layer carries its option."""
    spec = StackSpec(rpm=600, tpm=60_000, retries=2, timeout=5, fallbacks=("b",), cache_ttl=9,
                     circuit_breaker=True, max_wait=3)
    p = build_stack(spec, name="s", metrics={})
    assert kinds(p) == ["Metrics", "Cache", "Fallback", "Retry", "CircuitBreaker", "Timeout",
                        "RateLimit", "ConcurrencyLimit"]
    fallback, retry = p.layers[2], p.layers[3]
    assert fallback.alternates == ({"model": "b"},) and retry.attempts == 3
    assert kinds(build_stack(replace(spec, adaptive=True)))[-1] == "AdaptiveConcurrency"
    bare = StackSpec(retries=0, timeout=None)
    assert kinds(build_stack(bare)) == ["ConcurrencyLimit"]


def test_share_divides_quotas_and_concurrency() -> None:
    """Four processes without a shared backend each take a quarter of the quotas and slots."""
    p = build_stack(StackSpec(rpm=400, concurrency=16, retries=0, timeout=None), share=4)
    limit, slots = p.layers
    assert limit.statistics().requests_available == 100
    assert slots.limiter.limit == 4
