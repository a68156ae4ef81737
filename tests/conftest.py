"""Shared fixtures. Async tests run under looptime's virtual clock (see pyproject addopts)."""
