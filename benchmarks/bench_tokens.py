"""Token estimates against a real tokenizer: English, code, JSON, Chinese, Japanese.

    python benchmarks/bench_tokens.py

"actual" is tiktoken's o200k_base (the gpt-4o family), from the encoding file litellm bundles
(no download). Columns: the old chars/4 rule, llmguard's CJK-aware fallback (``count_text``,
used when tiktoken is absent), and ``request_tokens`` with the tokenizer (what ``llmguard run``
reserves against --tpm, minus framing and output reserve, so the ratio is per text).
"""

from __future__ import annotations

import json

from llmguard._core.tokens import count_text, tokenizer

SAMPLES = {
    "English": "The quick brown fox jumps over the lazy dog. " * 20
    + "Rate limits are counted by the provider when it receives a request, not when you send it.",
    "code": "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n"
    * 8 + "for i in range(10):\n    print(i, fib(i))\n",
    "JSON": json.dumps([{"id": i, "name": f"user{i}", "email": f"user{i}@example.com",
                         "tags": ["a", "b"], "score": i * 1.5} for i in range(20)]),
    "Chinese": "速率限制是由提供商在收到请求时计算的，而不是在你发送请求时计算的。" * 10,
    "Japanese": "レート制限は、リクエストを送信したときではなく、プロバイダーが受信したときにカウントされます。" * 10,
}


def main() -> None:
    actual = tokenizer("gpt-4o")
    if actual is None:
        print("tiktoken or its bundled o200k_base encoding is not installed: nothing to compare")
        return
    print(f"{'text':<10} {'actual':>7} {'chars/4':>8} {'ratio':>6} {'fallback':>9} {'ratio':>6}")
    for name, text in SAMPLES.items():
        real = actual(text)
        old = -(-len(text) // 4)
        new = count_text(text)
        print(f"{name:<10} {real:>7} {old:>8} {old / real:>6.2f} {new:>9} {new / real:>6.2f}")


if __name__ == "__main__":
    main()
