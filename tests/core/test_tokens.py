"""Token estimates and usage extraction shared by every layer."""

from types import SimpleNamespace

from llmguard import Usage, estimate_tokens, extract_usage


def test_estimate_counts_messages_and_reserves_output() -> None:
    """Chat messages are counted by characters plus framing, plus max_tokens reserved."""
    messages = [{"role": "user", "content": "x" * 400}]
    assert estimate_tokens(messages=messages, max_tokens=50) == 100 + 4 + 3 + 50


def test_estimate_default_output_reserve_and_prompt_forms() -> None:
    """Without max_tokens a default reserve applies; prompt strings and agents are understood."""
    assert estimate_tokens("x" * 40) == 10 + 256
    assert estimate_tokens(prompt="x" * 8, max_completion_tokens=2) == 4
    assert estimate_tokens(messages=[{"role": "user", "content": [{"type": "text", "text": "abcd"}]}],
                           max_tokens=0) == 1 + 4 + 3


def test_extract_usage_from_dicts_and_objects() -> None:
    """Chat-completions and responses-API usage, as dicts or objects, are read alike."""
    assert extract_usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == Usage(3, 4)
    obj = SimpleNamespace(usage=SimpleNamespace(input_tokens=5, output_tokens=6))
    assert extract_usage(obj).total_tokens == 11
    assert extract_usage({"usage": {"total_tokens": 9}}) == Usage(9, 0)
    assert extract_usage("plain text") is None


def test_cjk_text_counts_about_one_token_per_character() -> None:
    """The fallback counts CJK characters ~1 token each (chars/4 undercounts them ~3x); ASCII
    keeps chars/4."""
    from llmguard._core.tokens import count_text

    assert count_text("你好世界") == 4 and count_text("こんにちは") == 5
    assert count_text("x" * 40) == 10


def test_request_tokens_adds_framing_and_uses_tiktoken_offline_when_present() -> None:
    """request_tokens = messages (tokenizer or fallback) + framing + output reserve; tiktoken is
    used only when its encoding file is already on disk (never downloaded)."""
    from llmguard._core.tokens import REQUEST_OVERHEAD, count_text, request_tokens, tokenizer

    messages = [{"role": "user", "content": "hello there"}]
    count = tokenizer("gpt-4o") or count_text
    assert request_tokens(messages=messages, max_tokens=7, model="gpt-4o") == (
        count("hello there") + 4 + 3 + REQUEST_OVERHEAD + 7)
