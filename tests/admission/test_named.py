"""Which quota a 429 names (``named.py``): read from the messages providers send, so that a
refusal on tokens is learned as one whatever our own counts make look fullest."""

import pytest

from llmguard._admission.ratelimit.named import Named, named
from llmguard.testing import FixedWindowServer, RateLimited, SimulatedProvider

OPENAI_TPM = ("Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): "
              "Limit 30000, Used 29937, Requested 385. Please try again in 644ms. Visit "
              "https://platform.openai.com/account/rate-limits to learn more.")
OPENAI_RPM = ("Rate limit reached for gpt-4o-mini in organization org-abc on requests per min "
              "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.")


@pytest.mark.parametrize(("message", "expected"), [
    (OPENAI_TPM, Named(True, "", 30000)),
    (OPENAI_RPM, Named(False, "", 3)),
    (f"Error code: 429 - {{'error': {{'message': '{OPENAI_TPM}', 'type': 'tokens'}}}}",
     Named(True, "", 30000)),
    ("Rate limit reached for gpt-4 on tokens per day (TPD): Limit 90000, Used 89000, "
     "Requested 3000.", Named(True, "", 90000, minute=False)),
    ("Rate limit reached for 10KTPM-200RPM in organization org-abc on tokens per min. "
     "Limit: 10000 / min. Please try again in 6ms.", Named(True, "", 10000)),
    ("Rate limit reached for tokens. Limit: 150000.000000 / min. Current: 176000.000000 / min.",
     Named(True, "", 150000)),
    ("This request would exceed the rate limit for your organization of 20,000 input tokens "
     "per minute. Please reduce the prompt length or the maximum tokens requested",
     Named(True, "input", 20000)),
    ("Number of request tokens has exceeded your per-minute rate limit", Named(True)),
    ("Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
     "2024-05-01-preview have exceeded token rate limit of your current OpenAI S0 pricing "
     "tier. Please retry after 6 seconds.", Named(True)),
    ("Requests to the ChatCompletions_Create Operation have exceeded call rate limit of your "
     "current OpenAI S0 pricing tier.", Named(False)),
    ("Rate limit reached for input-tokens (input/output token bucket). Please try again in 1s.",
     Named(True, "input")),
], ids=["openai-tpm", "openai-rpm", "openai-sdk", "openai-daily", "openai-former",
        "openai-older", "anthropic-itpm", "anthropic-former", "azure-tokens", "azure-calls",
        "ours-input"])
def test_the_quota_a_message_names_and_its_limit(message: str, expected: Named) -> None:
    """OpenAI's "on tokens per min (TPM): Limit N" (its SDK's error text wraps it), its daily
    limits (named, not per minute), its former formats, Anthropic's "N input tokens per
    minute", Azure's "token rate limit" / "call rate limit"."""
    assert named(RateLimited(message, status_code=429, headers={})) == expected


@pytest.mark.parametrize("message", [
    "Rate limit reached for requests, tokens (fixed window). Please try again in 1s.",
    "429: LiteLLM Rate Limit Handler for rate limit type = team. Crossed TPM / RPM / Max "
    "Parallel Request Limit. current rpm: 1, rpm limit: 15, current tpm: 12260, tpm limit: 5000",
    "Rate limit is exceeded. Try again in 2 seconds.",
    "slow down",
], ids=["both", "litellm-both", "azure-unnamed", "none"])
def test_a_message_naming_both_units_or_none_names_nothing(message: str) -> None:
    """Both units, or none: the caller falls back on its own counts."""
    assert named(RateLimited(message, status_code=429, headers={})) is None


async def test_the_testing_servers_name_what_refused() -> None:
    """``llmguard.testing``'s servers say which quota refused, as providers do."""
    server = FixedWindowServer(rpm=100, tpm=300, latency=0.0, rate_limit_headers=False)
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
    await server.acompletion(**request)
    with pytest.raises(RateLimited) as refused:
        await server.acompletion(**request)
    assert named(refused.value) == Named(True)
    provider = SimulatedProvider(rpm=1, latency=0.0)
    await provider.acompletion(**request)
    with pytest.raises(RateLimited) as refused:
        await provider.acompletion(**request)
    assert named(refused.value) == Named(False, "", 1)
