"""The spend cap of ``llmguard run``: ``--max-cost`` and ``--price``, and their checks."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from .checks import number_type

if TYPE_CHECKING:
    from .._admission.budget.layer import Budget

__all__ = ["add_arguments", "budget_problem", "make_budget", "price_type"]


def price_type(text: str) -> tuple[float, ...]:
    """``--price IN,OUT[,CACHED]``: USD per million input, output (and cached input) tokens,
    each finite and >= 0."""
    try:
        prices = tuple(float(part) for part in text.split(","))
    except ValueError:
        prices = ()
    if len(prices) not in (2, 3) or not all(math.isfinite(p) and p >= 0 for p in prices):
        raise argparse.ArgumentTypeError(
            f"expected IN,OUT[,CACHED]: USD per million input and output tokens (and cached "
            f"input tokens), e.g. 0.15,0.60 or 0.15,0.60,0.075; got {text!r}")
    return prices


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """``--max-cost`` and ``--price``, in the run's layer options."""
    group.add_argument("--max-cost", type=number_type(float, unit=" USD"), metavar="USD",
                       help="spend at most this much (USD) in this run: each attempt reserves "
                            "its maximum cost (prompt + max_tokens at the model's price) "
                            "before it is sent, and once the next line could pass the cap "
                            "nothing more is sent; lines not sent are reported (not failed) "
                            "and --resume with a new --max-cost continues them; with "
                            "--batch-api each batch reserves its lines at the batch price")
    group.add_argument("--price", type=price_type, metavar="IN,OUT[,CACHED]",
                       help="with --max-cost: USD per million input and output tokens (and "
                            "cached input tokens, billed as input without it) of every model (default: litellm's cost map; the offline fake "
                            "models need it); --batch-api charges half of it")


def budget_problem(args: argparse.Namespace) -> str | None:
    """A usage error in the spend-cap options, before anything runs (an unpriced --model
    included: said now, with how to price it), or None."""
    if args.price is not None and args.max_cost is None:
        return "--price prices the calls for --max-cost: pass --max-cost too"
    if args.max_cost is None:
        return None
    if args.ray is not None:
        return ("--max-cost does not go with --ray yet: run without it, or "
                "cap the spend with a Budget shared through Redis (see the README)")
    budget = make_budget(args.max_cost, args.price)
    if budget is not None and args.model is not None:
        try:
            budget.price(args.model)
        except LookupError:
            return (f"--max-cost needs a price for --model {args.model!r}, and litellm's cost "
                    "map has none: pass --price IN,OUT (USD per million input and output "
                    "tokens)")
    return None


def make_budget(max_cost: float | None, price: tuple[float, ...] | None) -> Budget | None:
    """The run's spend cap (--max-cost), priced by --price or litellm's cost map."""
    if max_cost is None:
        return None
    from .._admission.budget.layer import Budget  # only for a capped run (start-up)

    return Budget(max_cost, prices=None if price is None else {"*": price}, name="llmguard-run")
