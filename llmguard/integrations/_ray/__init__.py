"""The parts of :mod:`llmguard.integrations.ray` (rows and records, the per-actor guard, the
recommended stack, the JSONL runner). Nothing here imports ray at import time except
``jsonl``, which the public module loads lazily."""
