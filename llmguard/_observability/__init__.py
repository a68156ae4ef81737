"""_observability: private; import public names from ``llmguard``."""
