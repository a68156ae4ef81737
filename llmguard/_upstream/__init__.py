"""Upstreams: how llmguard's applications talk to providers (transports, provider batch APIs)."""
