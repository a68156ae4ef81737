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


def test_parsed_json_reads_as_the_same_usage_object() -> None:
    """Usage as parsed JSON (plain dicts, read on a shortcut) and as SDK-like objects (read
    field by field) give the same Usage, cached prompt tokens included; a positional prompt
    estimates as ``prompt=`` does."""

    def objects(value):  # type: ignore[no-untyped-def]
        return SimpleNamespace(**{k: objects(v) for k, v in value.items()}) \
            if isinstance(value, dict) else value

    for usage in ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                  {"prompt_tokens": 9, "completion_tokens": 2,
                   "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0}},
                  {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": None},
                  {"prompt_tokens": 1, "completion_tokens": True},
                  {"input_tokens": 5, "output_tokens": 6, "cache_read_input_tokens": 2}):
        found = extract_usage({"usage": usage})
        assert found == extract_usage(objects({"usage": usage})) and found is not None
    assert extract_usage({"usage": usage_with_cache()}) == Usage(9, 2, 5)
    for text in ("x" * 41, ["a", "bc"], None):
        assert estimate_tokens(text, 7) == estimate_tokens(7, prompt=text)
    assert estimate_tokens() == estimate_tokens(prompt=None) == 256


def usage_with_cache() -> dict:
    return {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 5}}


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
