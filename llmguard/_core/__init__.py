"""_core: private; import public names from ``llmguard``."""
