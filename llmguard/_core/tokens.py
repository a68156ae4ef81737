"""Token estimates before a call and actual usage after it, for OpenAI-style arguments and results.

Shared by the rate limiter (reservation and reconciliation), metrics, the batch runner and the
command line, so every part of llmguard counts tokens the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from .public import public

__all__ = ["Usage", "estimate_tokens", "extract_usage", "field"]

#: Rough characters per token of English text for BPE tokenizers (OpenAI's rule of thumb).
CHARS_PER_TOKEN = 4
#: Per-message framing tokens the chat format adds (role, separators).
MESSAGE_OVERHEAD = 4
#: Output tokens reserved when the call sets no ``max_tokens``.
DEFAULT_OUTPUT_RESERVE = 256


@public
@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call actually consumed."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _text_tokens(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return -(-len(value) // CHARS_PER_TOKEN)
    if isinstance(value, Mapping):
        # A message or content part: count its text-bearing fields.
        return sum(_text_tokens(value.get(k)) for k in ("content", "text", "name", "tool_calls"))
    if isinstance(value, (list, tuple)):
        return sum(_text_tokens(v) for v in value)
    return _text_tokens(str(value))


def estimate_tokens(*args: Any, **kwargs: Any) -> int:
    """Estimate the tokens a call will consume (prompt plus reserved output).

    Understands OpenAI-style ``messages=[...]``, ``prompt=``, ``input=`` and a first positional
    string (a ``send_message(prompt)`` agent), plus ``max_tokens`` / ``max_completion_tokens`` /
    ``max_output_tokens`` for the output reservation, which providers also count against TPM.
    """
    messages = kwargs.get("messages")
    if messages is not None:
        prompt = sum(_text_tokens(m) + MESSAGE_OVERHEAD for m in messages) + 3
    else:
        text = kwargs.get("prompt", kwargs.get("input"))
        if text is None:
            text = next((a for a in args if isinstance(a, (str, list))), None)
        prompt = _text_tokens(text)
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        limit = kwargs.get(name)
        if isinstance(limit, int):
            return prompt + limit
    return prompt + DEFAULT_OUTPUT_RESERVE


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise; None when absent (SDK objects and dicts alike)."""
    if type(obj) is dict:  # the common case, without the (slow) Mapping ABC check
        return obj.get(name)
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def extract_usage(result: Any) -> Usage | None:
    """Read actual usage from a result: ``.usage`` or ``["usage"]`` in chat or responses form.

    Returns None when the result carries no usage (a plain string from an agent, say).
    """
    usage = field(result, "usage")
    if usage is None:
        return None
    input_tokens = field(usage, "prompt_tokens")
    if input_tokens is None:
        input_tokens = field(usage, "input_tokens")
    output_tokens = field(usage, "completion_tokens")
    if output_tokens is None:
        output_tokens = field(usage, "output_tokens")
    if input_tokens is None and output_tokens is None:
        total = field(usage, "total_tokens")
        return Usage(int(total), 0) if isinstance(total, int) else None
    return Usage(int(input_tokens or 0), int(output_tokens or 0))
