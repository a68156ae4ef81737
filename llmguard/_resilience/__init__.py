"""_resilience: private; import public names from ``llmguard``."""
