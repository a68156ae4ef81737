"""_runners: private; import public names from ``llmguard``."""
