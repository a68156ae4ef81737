"""_cli: private; import public names from ``llmguard``."""
