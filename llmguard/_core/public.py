"""Public names show the namespace users import them from, not the private module they live in."""

from typing import TypeVar

__all__ = ["public"]

T = TypeVar("T")


def public(cls: T) -> T:
    """Class decorator: ``repr``, tracebacks, ``error.type`` and pickles say ``llmguard.Name``.

    Pickling still works: ``llmguard.Name`` resolves through the package's lazy namespace.
    """
    cls.__module__ = "llmguard"  # type: ignore[attr-defined]
    return cls
