"""Counts of the changes to what the probing's scans of ours read (:mod:`.served`), so a
scan's result is kept while nothing it read changed: asked several times an admission while
a probe is in flight, each pass over ours within two windows (1,800 at 900 RPM, 20,000 at
10,000 RPM) took 40% of a silent server's CPU at 900 RPM.

``counted``: an entry's ``live`` or ``refused`` changed (a refund, a move, a 429), in any
window: :meth:`.window.Window.adjust`, :func:`.move.move`, :func:`.learn_refusal.refused`.
``answered``: an entry's ``answered`` changed (its call ended), the same ones. Code that
changes one of them elsewhere counts it too, or a scan returns what it read before. An
entry's ``time``, ``estimate`` and ``seq`` never change once made; a log or ``recent`` only
appends new entries and drops its oldest (a log folds only as it appends:
:meth:`.log.Log.fold`), so its length, first and last entries tell whether it changed (a
folded head's ``time`` and ``live`` change, but its ``answered`` stays inf: no scan here
counts it, and no ``recent`` holds it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["answered", "counted", "keep", "kept"]

counted = answered = 0


def _stood(entries: Any) -> tuple[Any, ...]:
    """What tells whether ``entries`` (a log's, or ``recent``) changed: its length, first and
    last entries (held with the result, so no other takes their ids)."""
    return (len(entries), entries[0], entries[-1]) if entries else (0,)


def kept(window: Any, name: str, entries: Any, key: tuple[Any, ...]) -> Any:
    """The result of ``window``'s scan ``name`` of ``entries`` made while ``key`` held, as
    ``entries`` stand (None: none such)."""
    scan = window.scans.get(name)
    if scan is None or scan[0] is not entries or scan[1] != key or scan[2] != _stood(entries):
        return None
    return scan[3]


def keep(window: Any, name: str, entries: Any, key: tuple[Any, ...], result: Any) -> Any:
    """Keep ``result`` of ``window``'s scan ``name`` of ``entries`` while ``key`` holds and
    ``entries`` stand; ``result``."""
    window.scans[name] = (entries, key, _stood(entries), result)
    return result
