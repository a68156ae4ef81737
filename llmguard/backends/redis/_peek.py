"""What the other processes sharing a key sent, for this process's learning (``refill="auto"``).

Each process learns the server's shape from its own answers (``_learning``), but the server
counts every process's requests: a ``remaining`` read against this process's admissions alone
refutes a clock minute that every process's admissions confirm (``learn._fresh``). While this
process's mirror supposes a boundary (``shape.Shape.candidate``), each reservation
(``_auto_scripts.RESERVE``) also returns what the others admitted since its last one (the log's
members, their token counts, refused or not) and when their calls ended (the ``done`` set),
which this process keeps in its mirror's :class:`~llmguard._admission.ratelimit.others.Others`.
A refund or a new token count of theirs after this process read it is not seen (rare: a call
that never left; a token count is read as reserved).
"""

from __future__ import annotations

from typing import Any

from ..._admission.ratelimit.others import Others

__all__ = ["PEEK", "learning", "peek", "quiet", "read"]

#: Lua: ``peeked()``, the reply's element for ``peek`` ('' none; else this process's member
#: prefix, a comma, and the cursor it last got, '' none): ``{cursor, admissions, member, when
#: - now, ..., id, ended - now, ...}``, the log's members of other processes admitted after the
#: cursor, then the ends (``done``) recorded after it. Reads ``log``, ``done``, ``now``, ``fmt``.
PEEK = """
local function peeked()
  if peek == '' then return {} end
  local own, after = string.match(peek, '^([^,]*),(.*)$')
  local lo = after ~= '' and '(' .. after or '-inf'
  local out = {fmt(now), '0'}
  local function theirs(zset)
    local found, n = redis.call('ZRANGEBYSCORE', zset, lo, '+inf', 'WITHSCORES'), 0
    for j = 1, #found, 2 do
      if string.sub(found[j], 1, #own) ~= own then
        out[#out + 1] = found[j]
        out[#out + 1] = fmt(tonumber(found[j + 1]) - now)
        n = n + 1
      end
    end
    return n
  end
  out[2] = tostring(theirs(log))
  theirs(done)
  return out
end
"""


def peek(window: Any, own: str) -> str:
    """The reservation's ``peek`` argument for ``window`` (this process's mirror of a key):
    '' unless it supposes a boundary (then its :class:`Others` is made if need be)."""
    shape = window.shape
    if shape is None or shape.kind != "unknown" or shape.candidate is None:
        if shape is not None:
            shape.others = None  # nothing to confirm: read afresh for the next boundary
        return ""
    if shape.others is None:
        shape.others = Others()
    cursor = shape.others.cursor
    return f"{own},{'' if cursor is None else cursor}"


def learning(window: Any, own: str) -> list[str]:
    """What a reservation tells ``_auto_scripts.RESERVE`` of this process's learning for
    ``window``: its ``peek``, the shape assumed until one is learned (``'bucket'`` for
    input/output token quotas: ``shape.Shape.assumed``; '' none), and ``quiet``."""
    return [peek(window, own), window.shape.assumed if window.shape is not None else "",
            quiet(window)]


def quiet(window: Any) -> str:
    """'1' when this process read an answer of ``window``'s server without any rate-limit
    header, and no reading since (``_silent``), else ''."""
    return "1" if window.shape is not None and window.shape.quiet else ""


def read(window: Any, now: float, got: Any) -> None:
    """Keep what a reservation's ``peeked()`` returned (``got``) in ``window``'s
    :class:`Others`, its times as of ``now`` (loop time); forget those no window holds."""
    shape = window.shape
    if not got or shape is None or shape.others is None:
        return
    others, got = shape.others, [x.decode() if isinstance(x, bytes) else x for x in got]
    others.cursor = got[0]
    admissions = int(got[1])
    for i in range(2, 2 + 2 * admissions, 2):
        name, _, tokens = got[i].rpartition(":")
        name, refused = (name[:-2], True) if name.endswith(":r") else (name, False)
        others.admitted(name, now + float(got[i + 1]), int(tokens), refused)
    for i in range(2 + 2 * admissions, len(got), 2):
        others.ended(got[i], now + float(got[i + 1]))
    others.forget(now - 2 * shape.window - 2 * shape.margin)
