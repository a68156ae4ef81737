"""Separate input and output token quotas (``RateLimit(input_tpm=, output_tpm=)``).

Anthropic (ITPM/OTPM) and Vertex AI limit input and output tokens apart. Anthropic documents how
it counts them: input tokens when the request arrives; output tokens estimated from
``max_tokens`` when it arrives and adjusted to the actual output when the answer ends. So a call
reserves :class:`Tokens` (its prompt estimate and its ``max_tokens``, else
:data:`~llmguard._core.tokens.DEFAULT_OUTPUT_RESERVE`) and is reconciled to the usage its answer
reports (a stream's final chunk), given back whole when it never reached the provider.

The backends know one kind of token: ``split_backend.SplitBackend`` keeps the input and output
quotas under keys of their own in the same backend.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ..._core.errors import RequestTooLarge
from ..._core.tokens import DEFAULT_OUTPUT_RESERVE, estimate_tokens
from .quotas import recorded_usage, too_large as total_too_large
from .window import Quota

__all__ = ["Part", "Ticket", "Tokens", "amount", "check_fits", "layout", "split_estimate",
           "split_used", "too_large"]

#: The keyword arguments that bound a call's output, in the order they are looked up.
_OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class Tokens(int):
    """Tokens of one call, split: the int is the total (what a total ``tpm`` quota and every
    int-typed path see, e.g. a backend written before the split), ``input`` and ``output`` its
    parts. An int subclass cannot have ``__slots__`` with fields, so it carries a small dict."""

    input: int
    output: int

    def __new__(cls, input: int, output: int) -> Tokens:  # noqa: A002 - the provider's word
        self = super().__new__(cls, input + output)
        self.input, self.output = input, output
        return self

    def __repr__(self) -> str:
        return f"Tokens(input={self.input}, output={self.output})"

    __str__ = __repr__


def _output_reserve(kwargs: dict[str, Any]) -> int:
    for name in _OUTPUT_LIMITS:
        limit = kwargs.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool):
            return limit
    return DEFAULT_OUTPUT_RESERVE


def split_estimate(tokens: Callable[..., Any] | None) -> Callable[..., Tokens]:
    """A ``(*args, **kwargs) -> Tokens`` estimator. Without ``tokens``: input is
    :func:`llmguard.estimate_tokens` of the prompt (plus Anthropic's ``system=``), output is
    ``max_tokens`` (or :data:`DEFAULT_OUTPUT_RESERVE`). A user's ``tokens`` may return
    ``(input, output)``, or an int taken as the total of which ``max_tokens`` is the output."""

    def estimate(*args: Any, **kwargs: Any) -> Tokens:
        output = _output_reserve(kwargs)
        if tokens is None:
            prompt = estimate_tokens(*args, **{**kwargs, "max_tokens": 0})
            system = kwargs.get("system")
            if system:
                prompt += estimate_tokens(system, max_tokens=0)
            return Tokens(prompt, output)
        value = tokens(*args, **kwargs)
        if isinstance(value, tuple):
            return Tokens(int(value[0]), int(value[1]))
        return Tokens(max(0, int(value) - output), min(output, int(value)))

    return estimate


def check_fits(tokens: Tokens, quotas: tuple[Quota, ...]) -> RequestTooLarge | None:
    """The error for a call whose input or output alone is larger than its quota (it could
    never be admitted), or None when it fits."""
    for quota in quotas:
        need = {"input": tokens.input, "output": tokens.output}.get(quota.part)
        if need is not None and need > quota.limit:
            fix = "shorten the prompt" if quota.part == "input" else "lower max_tokens"
            return RequestTooLarge(
                f"the call needs an estimated {need} {quota.part} tokens but at most "
                f"{quota.limit} are ever available ({quota.describe()}); {fix}, or raise "
                f"{quota.part}_tpm")
    return None


def too_large(tokens: int, limit: int | None, quotas: tuple[Quota, ...]) -> RequestTooLarge:
    """The error for a call that no quota could ever hold: an input or output part
    (:func:`check_fits`), else its total over ``limit``, the smallest total-token quota."""
    if isinstance(tokens, Tokens) and (error := check_fits(tokens, quotas)) is not None:
        return error
    return total_too_large(tokens, limit, ", ".join(q.describe() for q in quotas))


def split_used(call: Any, result: Any, reserved: Tokens,
               usage: Callable[[Any], int | None] | None) -> Tokens:
    """Tokens the call used, split: the answer's usage (recorded as ``call.record.usage`` when
    no layer has yet). Input counts what Anthropic's ITPM counts: uncached input plus tokens
    written to the prompt cache, not those read from it. A ``usage(result)`` total moves the
    output (the input stays as reserved); without either, the reservation stands."""
    if usage is not None:
        total = usage(result)
        if total is None:
            return reserved
        return Tokens(reserved.input, max(0, int(total) - reserved.input))
    found = recorded_usage(call, result)
    if found is None:
        return reserved
    return Tokens(found.input_tokens - found.cache_read_tokens, found.output_tokens)


@dataclass(frozen=True, slots=True)
class Part:
    """The backend key of a layer's ``input`` or ``output`` token quotas for ``key`` (equal
    only to another Part, so it never meets a key of the layer's own ``key=``)."""

    part: str
    key: Hashable


class Ticket:
    """A reservation in several windows: ``(backend key, ticket)`` each, and what it reserved."""

    __slots__ = ("taken", "tokens")

    def __init__(self, taken: list[tuple[Hashable, Any, str]], tokens: Any) -> None:
        self.taken, self.tokens = taken, tokens


def amount(part: str, tokens: Any) -> int:
    if not part:
        return int(tokens)
    if isinstance(tokens, Tokens):
        return tokens.input if part == "input" else tokens.output
    return 0  # a plain int (an old caller): its parts are unknown


def layout(cache: dict[Any, Any], quotas: tuple[Quota, ...]) -> list[tuple[str, tuple[Quota, ...]]]:
    """``(part, its quotas)`` for the parts of ``quotas`` that have some: "" (requests and
    totals) first, then ``input`` and ``output``; kept in ``cache`` (one per margin the layer
    measured, :mod:`.latency`: cleared past 64)."""
    found = cache.get(quotas)
    if found is None:
        if len(cache) > 64:
            cache.clear()
        found = cache[quotas] = [
            (part, tuple(q for q in quotas if q.part == part))
            for part in ("", "input", "output") if any(q.part == part for q in quotas)]
    return found
