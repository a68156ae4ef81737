"""What an attempt is charged when it settles: the billing rules, apart from the layer.

* Never reached the provider, or answered with an error status (4xx/5xx: not billed): 0.
* Sent and never answered (a timeout, a dropped connection, a cancellation): its whole
  reservation, since the provider may have billed it.
* Answered: litellm's own price when it wrote one (the integration's ``record.cost``, or the
  response's ``response_cost``), else the reported usage at the budget's price; an answer
  without usage is charged its reservation.
"""

from __future__ import annotations

from typing import Any

from ..._core.call import Call
from ..._core.classify import classify
from ..._core.tokens import extract_usage, field
from .prices import Price, nanos, to_usd

__all__ = ["answer_cost", "failed_cost"]


def failed_cost(call: Call, exc: BaseException, amount: int) -> int:
    """Nano-dollars a failed attempt that reserved ``amount`` is charged."""
    if not call.sent:
        return 0
    if isinstance(exc, Exception) and classify(exc).status is not None:
        return 0
    return amount


def answer_cost(call: Call, price: Price, result: Any, amount: int, before: float | None) -> int:
    """Nano-dollars an answer (``result``; a stream's usage chunk, or None) is charged; writes
    the call record's ``cost`` (and ``usage``) when nothing below did. ``before`` is the
    record's cost when the attempt started."""
    record = call.record
    if record.cost is not None and record.cost != before:  # priced inside (litellm)
        return nanos(record.cost - (before or 0.0))
    hidden = getattr(result, "_hidden_params", None)  # litellm priced the answer itself
    if isinstance(hidden, dict) and isinstance(hidden.get("response_cost"), (int, float)):
        record.cost = (record.cost or 0.0) + float(hidden["response_cost"])
        return nanos(float(hidden["response_cost"]))
    usage = None if result is None else extract_usage(result)
    if usage is None:  # the answer says nothing of its cost: charged as reserved
        return amount
    if record.usage is None:
        record.usage = usage
    cost = price.cost(field(result, "usage"), usage.input_tokens, usage.output_tokens)
    record.cost = (record.cost or 0.0) + to_usd(cost)
    return cost
