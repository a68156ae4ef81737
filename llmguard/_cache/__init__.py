"""_cache: private; import public names from ``llmguard``."""
