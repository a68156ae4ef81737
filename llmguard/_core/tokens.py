"""Token estimates before a call and actual usage after it, for OpenAI-style arguments and results.

Shared by the rate limiter (reservation and reconciliation), metrics, the batch runner and the
command line, so every part of llmguard counts tokens the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .usage import Usage

__all__ = ["Usage", "count_text", "estimate_tokens", "extract_usage", "field", "max_output",
           "prompt_bound", "request_tokens", "tokenizer"]

#: Rough characters per token of English text for BPE tokenizers (OpenAI's rule of thumb).
CHARS_PER_TOKEN = 4
#: Per-message framing tokens the chat format adds (role, separators).
MESSAGE_OVERHEAD = 4
#: Output tokens reserved when the call sets no ``max_tokens``.
DEFAULT_OUTPUT_RESERVE = 256
#: Tokens a request's JSON framing adds beyond its messages (measured against OpenAI's
#: reported prompt_tokens: ~12 for a one-message chat request); see ``request_tokens``.
REQUEST_OVERHEAD = 12

# Han, kana, Hangul and full-width forms: BPE tokenizers spend about one token per character
# on them (chars/4 undercounts Chinese and Japanese about 3x).
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


_new = tuple.__new__


def count_text(text: str) -> int:
    """Heuristic tokens of ``text``: one per CJK character, one per 4 other characters."""
    cjk = len(_CJK.findall(text)) if not text.isascii() else 0
    return cjk + -(-(len(text) - cjk) // CHARS_PER_TOKEN)


def _text_tokens(value: Any, count: Callable[[str], int] = count_text) -> int:
    # Loops written out (no generator per message): this runs for every message of every call.
    if value is None:
        return 0
    if isinstance(value, str):
        return count(value)
    if type(value) is dict or isinstance(value, Mapping):
        total = 0  # a message or content part: its text-bearing fields
        for name in ("content", "text", "name", "tool_calls"):
            part = value.get(name)
            if part is not None:
                total += count(part) if type(part) is str else _text_tokens(part, count)
        return total
    if isinstance(value, (list, tuple)):
        return sum(_text_tokens(v, count) for v in value)
    return _text_tokens(str(value), count)


def _prompt(args: tuple[Any, ...], kwargs: Mapping[str, Any], count: Callable[[str], int]) -> int:
    """A call's prompt counted by ``count``: its ``messages`` with their framing, else
    ``prompt=``, ``input=`` or the first positional string or list."""
    messages = kwargs.get("messages")
    if messages is not None:
        prompt = 3
        for message in messages:
            prompt += _text_tokens(message, count) + MESSAGE_OVERHEAD
        return prompt
    text = kwargs.get("prompt", kwargs.get("input"))
    if text is None:
        for arg in args:
            if isinstance(arg, (str, list)):
                return _text_tokens(arg, count)
    return _text_tokens(text, count)


def estimate_tokens(*args: Any, **kwargs: Any) -> int:
    """Estimate the tokens a call will consume (prompt plus reserved output).

    Understands OpenAI-style ``messages=[...]``, ``prompt=``, ``input=`` and a first positional
    string (a ``send_message(prompt)`` agent), plus ``max_tokens`` / ``max_completion_tokens`` /
    ``max_output_tokens`` for the output reservation, which providers also count against TPM.
    """
    if not kwargs and args and type(args[0]) is str:  # ``send_message(prompt)``: the shortest way
        text = args[0]
        if text.isascii():  # ``count_text(text)``, written out for an ASCII prompt (no CJK)
            return -(-len(text) // CHARS_PER_TOKEN) + DEFAULT_OUTPUT_RESERVE
        return count_text(text) + DEFAULT_OUTPUT_RESERVE
    prompt = _prompt(args, kwargs, count_text)
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        limit = kwargs.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool):
            if limit < 0:  # a negative reservation would let that much more through the quota
                raise ValueError(f"{name}={limit} is negative; pass {name} >= 0 (the most "
                                 "output tokens the call may use) or leave it out")
            return prompt + limit
    return prompt + DEFAULT_OUTPUT_RESERVE


_ENCODERS: dict[str, Any] = {}


def _encoding_name(model: Any) -> str:
    name = str(model or "").lower()
    if name.startswith(("gpt-3.5", "gpt-4-", "gpt-4", "text-embedding")) and not name.startswith(
            ("gpt-4o", "gpt-4.1", "gpt-4.5")):
        return "cl100k_base"
    return "o200k_base"  # gpt-4o, gpt-4.1, o-series, gpt-5, and the default for unknown models


def tokenizer(model: Any = None) -> Callable[[str], int] | None:
    """A ``text -> token count`` function with the model's tiktoken encoding, or None.

    Never downloads: tiktoken fetches encodings from the network on first use, so this looks
    for the encoding file in ``TIKTOKEN_CACHE_DIR`` or in the copy litellm bundles (o200k_base,
    cl100k_base), and returns None when tiktoken or the file is missing (callers then use the
    CJK-aware heuristic :func:`count_text`).
    """
    name = _encoding_name(model)
    if name in _ENCODERS:
        return _ENCODERS[name]
    _ENCODERS[name] = None
    import hashlib
    import importlib.util
    import os

    try:
        if importlib.util.find_spec("tiktoken") is None:
            return None
        cache = os.environ.get("TIKTOKEN_CACHE_DIR")
        if cache is None:
            spec = importlib.util.find_spec("litellm")
            if spec is None or not spec.submodule_search_locations:
                return None
            cache = os.path.join(list(spec.submodule_search_locations)[0],
                                 "litellm_core_utils", "tokenizers")
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        if not os.path.exists(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())):
            return None
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", cache)  # where tiktoken reads it from
        import tiktoken

        encoding = tiktoken.get_encoding(name)
    except Exception:  # a broken install must not break a run: the heuristic is the fallback
        return None

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    _ENCODERS[name] = count
    return count


def request_tokens(*args: Any, **kwargs: Any) -> int:
    """Tokens a chat request is charged against a TPM quota: its messages counted with the
    model's tokenizer when one is installed (:func:`tokenizer`), else :func:`count_text`,
    plus per-message and request framing (:data:`REQUEST_OVERHEAD`) and the output reserved
    (``max_tokens``, else :data:`DEFAULT_OUTPUT_RESERVE`). Same signature as
    :func:`estimate_tokens`, so it plugs into ``RateLimit(tokens=...)``.
    """
    prompt = _prompt(args, kwargs, tokenizer(kwargs.get("model")) or count_text)
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        limit = kwargs.get(name)
        if isinstance(limit, int):
            return prompt + REQUEST_OVERHEAD + limit
    return prompt + REQUEST_OVERHEAD + DEFAULT_OUTPUT_RESERVE


def utf8_bytes(text: str) -> int:
    """Bytes of ``text`` in UTF-8: at least its tokens for a byte-level BPE tokenizer."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def prompt_bound(*args: Any, **kwargs: Any) -> int:
    """An upper bound of the input tokens a provider can bill for a call (what a spend cap
    reserves): every text's UTF-8 bytes (a token of a byte-level BPE tokenizer, which GPT, Claude
    and Llama models use, covers at least one byte), the JSON of ``tools`` / ``functions`` /
    ``response_format``, and the chat framing. Images and audio parts are not counted.
    """
    prompt = _prompt(args, kwargs, utf8_bytes)
    extra = [kwargs[name] for name in ("tools", "functions", "response_format") if kwargs.get(name)]
    if extra:
        import json  # only for calls that define tools

        prompt += utf8_bytes(json.dumps(extra, default=str))
    return prompt + REQUEST_OVERHEAD


def max_output(kwargs: Mapping[str, Any]) -> int | None:
    """The output tokens a call allows (``max_tokens``, ``max_completion_tokens`` or
    ``max_output_tokens``), or None when it sets none."""
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        limit = kwargs.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool):
            return limit
    return None


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
    # ``field(result, "usage")``, written out for a parsed JSON answer (every answered call)
    usage = result.get("usage") if type(result) is dict else field(result, "usage")
    if usage is None:
        return None
    if type(usage) is dict:  # OpenAI chat usage as parsed JSON: the common case, read directly
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if type(prompt) is int and type(completion) is int:
            details = usage.get("prompt_tokens_details")
            return _new(Usage, (prompt, completion, 0 if details is None  # ``Usage(...)``,
                                else _count(field(details, "cached_tokens")), 0))  # one C call
    input_tokens = field(usage, "prompt_tokens")
    read = written = 0
    if input_tokens is None:
        input_tokens = field(usage, "input_tokens")
        read, written = (_count(field(usage, "cache_read_input_tokens")),
                         _count(field(usage, "cache_creation_input_tokens")))
        if read or written:  # Anthropic: input_tokens is the uncached rest of the prompt
            input_tokens = int(input_tokens or 0) + read + written
        else:  # OpenAI's Responses API: cached tokens are part of input_tokens
            read = _count(field(field(usage, "input_tokens_details"), "cached_tokens"))
    else:
        read = _count(field(field(usage, "prompt_tokens_details"), "cached_tokens"))
    output_tokens = field(usage, "completion_tokens")
    if output_tokens is None:
        output_tokens = field(usage, "output_tokens")
    if input_tokens is None and output_tokens is None:
        total = field(usage, "total_tokens")
        return Usage(int(total), 0) if isinstance(total, int) else None
    return Usage(int(input_tokens or 0), int(output_tokens or 0), read, written)


def _count(value: Any) -> int:
    """A token count read from a usage object: an int, else 0 (absent, None, a mock)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
