"""Provider batch APIs (OpenAI's Batch API, Anthropic's Message Batches): half price, same records.

``plan`` splits lines into batches within the provider's limits, ``ledger`` makes every
submission durable before it happens, ``engine`` submits, polls, collects and retries, and
``openai_batches`` / ``anthropic_batches`` speak each provider's protocol through its SDK.
"""
