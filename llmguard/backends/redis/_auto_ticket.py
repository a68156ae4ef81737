"""A reservation under ``refill="auto"`` in Redis (``_learning``)."""

from __future__ import annotations

from typing import Any

from ..._admission.ratelimit.log import Entry
from ..._admission.ratelimit.window import Quota

__all__ = ["AutoTicket"]


class AutoTicket:
    """A reservation under ``refill="auto"``: its log member, the state hash's ``b`` that
    holds its buckets, the local mirror entry its answer's headers are read against, and the
    give-back verdict shared for its key when it was admitted (``_giveback``: None, none)."""

    __slots__ = ("member", "made", "tokens", "entry", "quotas", "giveback", "silent",
                 "refusing")

    def __init__(self, member: str, made: Any, tokens: int, entry: Entry,
                 quotas: tuple[Quota, ...], giveback: tuple[bool, str, bool] | None = None,
                 spent: Any = None) -> None:
        made = self.made_of(quotas, made, spent)
        self.member, self.made, self.tokens, self.entry, self.quotas = (
            member, made, tokens, entry, quotas)
        self.giveback = giveback
        #: The stage of a silent server's probe it is (``_probe_scripts``: 3, 4 or 6; 0 none).
        self.silent = 0
        #: The write of a 429 to it (``_refused_scripts.REFUSED``), which its settlement follows.
        self.refusing: Any = None

    @staticmethod
    def made_of(quotas: tuple[Quota, ...], made: Any, spent: Any) -> Any:
        """The state hash's ``b`` a reservation is settled against; an output quota's with what
        its buckets' settled ones were charged by then (``spent``), for its give-back's bound
        (``_bucket_scripts.PRELUDE``'s ``marks_of``, as ``output.OutputBucket``)."""
        if spent is None or not any(q.part == "output" for q in quotas):
            return made
        return _text(made) + "|" + _text(spent)


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
