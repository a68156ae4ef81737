"""The serving process keeps its startup heap out of the garbage collector's scans, and its full
collections rare."""

from __future__ import annotations

import gc
import weakref

from llmguard._serve.server import FULL_COLLECTION_EVERY, tune_gc


class Node:
    """A container object the collector tracks."""

    me: Node | None = None


def test_tune_gc_collects_the_garbage_then_takes_what_lives_out_of_the_scans() -> None:
    live = Node()
    cycle = Node()
    cycle.me = cycle  # garbage only a collection frees: frozen, it would leak for ever
    gone = weakref.ref(cycle)
    del cycle
    thresholds = gc.get_threshold()
    try:
        tune_gc()
        assert gone() is None
        assert gc.get_freeze_count() > 0
        scanned = gc.get_objects()  # what a full collection walks: the frozen are not in it
        assert not any(obj is live for obj in scanned)
        young = Node()
        assert any(obj is young for obj in gc.get_objects())  # made after: scanned as before
        assert gc.get_threshold() == (*thresholds[:2], max(thresholds[2], FULL_COLLECTION_EVERY))
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
