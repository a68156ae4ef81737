"""_pipeline: private; import public names from ``llmguard``."""
