"""What a call may cost before it is sent, and what it cost once answered.

Money is counted in integer nano-dollars (1e-9 USD) everywhere a cap is enforced: sums of
integers are exact in Python and in Redis' Lua (doubles, exact to 2**53 nanos = $9M), where
floats would drift after millions of additions. Every conversion rounds up, so the spend a
ledger records is never below the bill at these prices.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..._core.tokens import field

__all__ = ["BATCH_DISCOUNT", "DEFAULT_MAX_OUTPUT", "NANOS", "Price", "PriceBook", "UnpricedModel",
           "nanos", "to_usd"]

#: Nano-dollars per dollar.
NANOS = 1_000_000_000
#: Output tokens reserved for a call that sets no ``max_tokens`` when the price does not say
#: the model's maximum output (litellm's map does for most models).
DEFAULT_MAX_OUTPUT = 4096
#: A batch API's price as a fraction of the online price where no batch price is known: the
#: discount OpenAI's Batch API and Anthropic's Message Batches document (cache reads and writes
#: included).
BATCH_DISCOUNT = 0.5
#: Anthropic bills cache writes at 1.25x the input price when the map gives no price for them.
CACHE_WRITE_FACTOR = 1.25


def nanos(usd: float, *, down: bool = False) -> int:
    """USD to nano-dollars, rounded up (a cost), or ``down`` (a cap: never above it)."""
    return math.floor(usd * NANOS + 1e-6) if down else math.ceil(usd * NANOS - 1e-6)


def to_usd(amount: int) -> float:
    return amount / NANOS


class UnpricedModel(LookupError):
    """A Budget has no price for the call's model: it refuses the call rather than count it free."""


@dataclass(frozen=True, slots=True)
class Price:
    """A model's prices in USD per million tokens, and its maximum output when known."""

    input: float
    output: float
    #: Cached input tokens (cache reads); None: billed as input.
    cached_input: float | None = None
    #: Cache writes (Anthropic's ``cache_creation_input_tokens``); None: 1.25x input.
    cache_write: float | None = None
    #: The most output tokens the model returns: reserved for calls without ``max_tokens``.
    max_output: int | None = None
    #: Input and output through the provider's batch API (None: the online price halved).
    batch_input: float | None = None
    batch_output: float | None = None

    def batch(self) -> Price:
        """The same model through the provider's batch API: its batch prices where known,
        else every price times :data:`BATCH_DISCOUNT`."""
        def half(value: float | None) -> float | None:
            return None if value is None else value * BATCH_DISCOUNT

        return replace(self, input=self.input * BATCH_DISCOUNT if self.batch_input is None
                       else self.batch_input,
                       output=self.output * BATCH_DISCOUNT if self.batch_output is None
                       else self.batch_output,
                       cached_input=half(self.cached_input), cache_write=half(self.cache_write),
                       batch_input=None, batch_output=None)

    def reserve(self, prompt: int, output: int) -> int:
        """Nano-dollars of a call of at most ``prompt`` input and ``output`` output tokens, every
        input token at the full input price (the dearest way it can be billed)."""
        return math.ceil(prompt * self.input * 1000 + output * self.output * 1000)

    def cost(self, usage: Any, input_tokens: int, output_tokens: int) -> int:
        """Nano-dollars of an answer, from its usage object (``usage``: the raw one, read for
        cached tokens) and its input and output token counts. OpenAI counts cache reads inside
        ``prompt_tokens`` (``prompt_tokens_details.cached_tokens``); Anthropic reports them,
        and cache writes, beside ``input_tokens``."""
        details = field(usage, "prompt_tokens_details")
        cached = field(details, "cached_tokens") if details is not None else None
        per_read = self.input if self.cached_input is None else self.cached_input
        total = output_tokens * self.output
        if details is not None:  # OpenAI's shape (litellm's too): cache reads inside the prompt
            cached = cached if isinstance(cached, int) and 0 < cached <= input_tokens else 0
            total += (input_tokens - cached) * self.input + cached * per_read
        else:  # Anthropic's: cache reads and writes beside input_tokens
            read = field(usage, "cache_read_input_tokens")
            written = field(usage, "cache_creation_input_tokens")
            total += input_tokens * self.input
            if isinstance(read, int) and read > 0:
                total += read * per_read
            if isinstance(written, int) and written > 0:
                total += written * (self.cache_write if self.cache_write is not None
                                    else self.input * CACHE_WRITE_FACTOR)
        return math.ceil(total * 1000 - 1e-6)


def _check(model: Any, value: Any) -> Price:
    if isinstance(value, Price):
        return value
    where = f"prices[{model!r}]"
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise TypeError(f"{where} must be (usd_per_million_input, usd_per_million_output) or "
                        f"(input, output, cached_input), got {value!r}")
    for name, number in zip(("input", "output", "cached_input"), value, strict=False):
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not (
                math.isfinite(number) and number >= 0):
            raise ValueError(f"{where}: the {name} price must be a finite number of USD per "
                             f"million tokens >= 0, got {number!r}")
    return Price(float(value[0]), float(value[1]),
                 None if len(value) < 3 else float(value[2]))


class PriceBook:
    """Prices by model: the ``prices`` given (``"*"`` prices any model without its own entry,
    and calls without a ``model`` argument), else litellm's cost map when litellm is installed
    (read with its bundled copy: never fetched over the network)."""

    __slots__ = ("_given", "_litellm", "_found")

    def __init__(self, prices: Mapping[str, Any] | None) -> None:
        self._given: dict[str, Price] | None = None
        self._litellm: Any = None
        self._found: dict[str | None, Price] = {}
        if prices is not None:
            if not isinstance(prices, Mapping) or not prices:
                raise TypeError(f"prices must be a non-empty dict {{model: (usd_per_million_input, "
                                f"usd_per_million_output)}}, or None for litellm's cost map, got "
                                f"{prices!r}")
            self._given = {str(model): _check(model, value) for model, value in prices.items()}
            return
        try:  # now, not at the first call: importing litellm takes seconds and blocks the loop
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm
        except ImportError:
            return  # every model is unpriced: the first call says how to price it
        self._litellm = litellm

    def price(self, model: str | None) -> Price:
        """The price of ``model``; raises :class:`UnpricedModel` saying how to price it."""
        found = self._found.get(model)
        if found is None:
            found = self._found[model] = self._lookup(model)
        return found

    def _lookup(self, model: str | None) -> Price:
        if self._given is not None:
            price = self._given.get(model) if model is not None else None
            if price is None:
                price = self._given.get("*")
            if price is not None:
                return price
            where = "in prices"
        elif self._litellm is not None and model is not None:
            try:
                info = self._litellm.get_model_info(model)
            except Exception:  # litellm raises its own error for models it does not map
                info = None
            if info and info.get("input_cost_per_token") is not None:
                def per_million(name: str) -> float | None:
                    value = info.get(name)
                    return None if value is None else float(value) * 1e6

                output = info.get("max_output_tokens")
                return Price(per_million("input_cost_per_token") or 0.0,
                             per_million("output_cost_per_token") or 0.0,
                             per_million("cache_read_input_token_cost"),
                             per_million("cache_creation_input_token_cost"),
                             output if isinstance(output, int) and output > 0 else None,
                             per_million("input_cost_per_token_batches"),
                             per_million("output_cost_per_token_batches"))
            where = "in litellm's cost map"
        else:
            where = ("(the call has no model argument)" if model is None else
                     "(litellm is not installed, so there is no default cost map)")
        raise UnpricedModel(
            f"Budget has no price for model {model!r} {where}, and an unpriced call is never "
            f"counted as free; pass prices={{{model or '*'!r}: (usd_per_million_input, "
            "usd_per_million_output)}} to Budget (a '*' entry prices every other model)")

    def __repr__(self) -> str:
        source = "litellm" if self._given is None else f"{len(self._given)} given"
        return f"<PriceBook {source}>"
