"""The one reorder buffer: results tagged 0, 1, 2, ... in any order, handed out in tag order."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Reorder"]

T = TypeVar("T")


class Reorder(Generic[T]):
    """Holds what finished early until everything before it has been handed out.

    Memory is bounded by the caller (it admits at most so many tags past :attr:`next`).
    """

    __slots__ = ("_held", "next")

    def __init__(self) -> None:
        self._held: dict[int, T] = {}
        #: The tag handed out next.
        self.next = 0

    def put(self, index: int, item: T) -> None:
        """Hold ``item`` (tag ``index``) until :meth:`pop` reaches it."""
        self._held[index] = item

    def pop(self) -> T | None:
        """The item tagged :attr:`next`, if it has arrived (and advance), else None."""
        item = self._held.pop(self.next, None)
        if item is not None:
            self.next += 1
        return item

    def skip_gap(self) -> bool:
        """Jump :attr:`next` to the lowest held tag (a tag that will never come, at shutdown);
        False when nothing is held."""
        if not self._held:
            return False
        self.next = min(self._held)
        return True

    def __len__(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        return f"<Reorder next={self.next} held={len(self._held)}>"
