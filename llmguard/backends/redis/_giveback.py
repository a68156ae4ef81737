"""The give-back verdict shared by every process (``RateLimit(output_tpm=...)`` in Redis).

Whether the server gives unused output back (:mod:`llmguard._admission.ratelimit.giveback`) is
learned by each process from its own answers; without sharing, every process would learn it
again, and with no output header heard test it again at the cost of a 429 each. So a process
whose verdict changes writes it in the output quota's shape HASH (``gb`` '1' or '0', ``gbwhy``;
:func:`tell`; 'd': given back provisionally, a test served just after a clock minute, in doubt
until a 429 refutes it or a request beyond the minute's count settles it, in any process:
``giveback_minute``; shared as settled, a 429 in another process refuted nothing), every reservation of that key returns it (``_auto_scripts.RESERVE``), carried
by its :class:`~._auto_ticket.AutoTicket`, and ``SplitBackend`` adopts it when it differs
(``split_giveback``). The last process to change its verdict wins: each changes it only on
its own evidence, and the others follow at their next reservation.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._auto_scripts import SHAPE_TTL
from ._client import Connection

__all__ = ["GIVEBACK", "parse", "tell"]

#: KEYS: shape. ARGV: the verdict ('1' gives back, 'd' gives back in doubt, '0' keeps), why,
#: its age (seconds since it was reached: a write retried after a timeout lands late; one
#: reached before the verdict shared, ``gbt``, is older and changes nothing).
GIVEBACK = """
local t = redis.call('TIME')
local at = tonumber(t[1]) + tonumber(t[2]) / 1000000 - tonumber(ARGV[3])
if at < (tonumber(redis.call('HGET', KEYS[1], 'gbt') or '') or -math.huge) then return 0 end
redis.call('HSET', KEYS[1], 'gb', ARGV[1], 'gbwhy', ARGV[2], 'gbt', string.format('%.17g', at))
redis.call('PEXPIRE', KEYS[1], """ + str(SHAPE_TTL * 1000) + """)
return 1
"""


def tell(connection: Connection, shape: str, verdict: bool, why: str,
         doubt: bool = False) -> asyncio.Task[None]:
    """Share ``verdict`` (in ``doubt``; and ``why``) in the ``shape`` HASH, in the
    background: the write."""
    code = ("d" if doubt else "1") if verdict else "0"
    loop = asyncio.get_running_loop()
    reached = loop.time()
    return connection.keep(GIVEBACK, [shape], lambda: [code, why, repr(loop.time() - reached)],
                           "sharing the give-back verdict")


def parse(gb: Any, why: Any) -> tuple[bool, str, bool] | None:
    """A reservation's ``gb`` and ``gbwhy`` as a verdict, why and whether in doubt (None:
    none shared)."""
    gb, why = (x.decode() if isinstance(x, bytes) else str(x) for x in (gb, why))
    return None if gb not in ("0", "1", "d") else (gb != "0", why, gb == "d")
