"""Shared-state backends for scaling out across processes."""
