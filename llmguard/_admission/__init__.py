"""_admission: private; import public names from ``llmguard``."""
