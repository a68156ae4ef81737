"""Credentials never shown: ``redact``/``redact_url`` directly, and Fallback's labels."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import llmguard as lg
from llmguard._core.redact import REDACTED as MASK, redact, redact_url
from llmguard.testing import FakeLLM, make_error

SECRET = "sk-THE-SECRET-42"
NAMES = ["api_key", "API_KEY", "openai_api_key", "x-api-key", "Authorization", "password",
         "client_secret", "access_token", "token"]


def test_redact_url_hides_only_the_password() -> None:
    """User-info passwords are hidden; host, port, path, user names and plain URLs stay."""
    assert redact_url(f"redis://:{SECRET}@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url(f"rediss://user:{SECRET}@h/1") == "rediss://user:***@h/1"
    assert redact_url("redis://user@h:6379") == "redis://user@h:6379"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_url_without_its_scheme_shows_no_password() -> None:
    """``user:password@host`` with its scheme forgotten (the mistake the errors that name a
    url refused point out) hides its password as well: RedisBackend's error printed it."""
    from llmguard.backends.redis import RedisBackend

    assert redact_url(f"default:{SECRET}@h:6379/0") == "default:***@h:6379/0"
    assert redact_url("h:6379/0") == "h:6379/0" and redact_url("user@h") == "user@h"
    with pytest.raises(ValueError, match="url must be a Redis URL") as refused:
        RedisBackend(f"default:{SECRET}@redis.internal:6379/0")
    assert SECRET not in str(refused.value)


def test_counts_named_tokens_are_not_secrets() -> None:
    """``max_tokens`` and friends are counts, kept as they are."""
    assert redact({"max_tokens": 5, "total_tokens": 9}) == {"max_tokens": 5, "total_tokens": 9}


json_values = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=5), st.sampled_from(NAMES)),
                        st.one_of(inner, st.just(SECRET)), max_size=3)),
    max_leaves=12)


@given(json_values)
def test_no_secret_survives_redaction(value) -> None:
    """Property: after ``redact``, no value stored under a credential-named key (at any depth)
    and no URL password can be found in the result's repr; the input is not changed."""
    before = repr(value)
    wrapped = {"nested": value, "url": f"https://bot:{SECRET}@example.com/x",
               "api_key": SECRET, "items": [{"Authorization": f"Bearer {SECRET}"}]}
    out = redact(wrapped)
    assert out["api_key"] == MASK and repr(value) == before

    def leaks(v, under_secret=False):
        if isinstance(v, dict):
            return any(leaks(x, under_secret or k in NAMES) for k, x in v.items())
        if isinstance(v, list):
            return any(leaks(x, under_secret) for x in v)
        return (under_secret and v == SECRET) or (isinstance(v, str) and SECRET in v and "://" in v)

    assert not leaks(out)


async def test_fallback_never_shows_an_alternates_credentials() -> None:
    """Issue 21 #5: ``Fallback({"model": ..., "api_key": KEY})``: the key appears in no label,
    ``FallbackExhausted`` message, ``stats()``, note or ``repr``; the model name still does."""
    alternate = {"model": "gpt-4o-mini", "api_key": SECRET}
    fallback = lg.Fallback(alternate)
    llm = FakeLLM([make_error(lg.FailureKind.OVERLOADED)] * 2)
    guarded = lg.guard(fallback)(llm.send_message)
    with pytest.raises(lg.FallbackExhausted) as info:
        await guarded("x", model="gpt-4o", api_key="primary-key")
    shown = [str(info.value), repr(info.value), repr(fallback), repr(fallback.statistics()),
             repr(guarded.stats())]
    assert all(SECRET not in s for s in shown), shown
    assert any("gpt-4o-mini" in s for s in shown)
    assert alternate["api_key"] == SECRET  # the override itself is used unchanged
    assert await guarded("y", model="gpt-4o", api_key="k") == "echo: y"
    assert SECRET not in repr(fallback.statistics())


@given(secret=st.text(min_size=4, max_size=24).filter(lambda s: s.strip() == s),
       before=st.text(max_size=12), after=st.text(max_size=12))
def test_a_known_secret_never_survives_whatever_its_shape(secret, before, after) -> None:
    """#35 item 8: a secret given to add_secret (what `llmguard run` does with its key) is gone
    from any text it appears in, in any shape (not only `sk-...`), nested in data too."""
    from llmguard._core import redact as redaction

    known = redaction._known
    try:
        redaction.add_secret(secret)
        text = before + secret + after
        assert secret not in redact(text)
        assert secret not in str(redact({"error": [(text,)]}))
    finally:
        redaction._known = known
