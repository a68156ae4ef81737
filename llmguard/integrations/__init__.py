"""Integrations with LLM client libraries; each module imports its library lazily."""
