"""What providers say about their rate limits: ``x-ratelimit-remaining-*`` / ``-reset-*`` /
``-limit-*`` headers (OpenAI) and ``anthropic-ratelimit-*-remaining`` / ``-reset`` / ``-limit``
(Anthropic: resets as RFC 3339 times, input and output tokens apart), and the pause a 429 asks
for; and handing both to the backend."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from ..._core import clock
from ..._core.classify import FailureKind, classify
from ..._core.errors import AdmissionError
from .latency import PROCESSING
from .named import named
from .refusal import DEFAULT_PAUSE

__all__ = ["DEFAULT_PAUSE", "HELD", "STARTED", "learned", "parse_duration", "parse_reset",
           "part_headers", "pause_after", "rate_limit_headers", "refusal", "report",
           "says_nothing", "sent", "spend", "unsaid"]

#: The reservation (``held.Held``) of the call being sent, for its headers to be read against.
HELD: ContextVar[Any] = ContextVar("llmguard_rate_limit_held", default=None)
#: True while the headers read came as a stream started (as of its request's admission).
STARTED: ContextVar[bool] = ContextVar("llmguard_rate_limit_started", default=False)


def pause_after(exc: BaseException) -> float | None:
    """Seconds to pause a key after ``exc``: its Retry-After when :func:`llmguard.classify` says
    the provider rate-limited the call (``DEFAULT_PAUSE`` without one), else None. Never for a
    cancellation or llmguard's own refusals."""
    if not isinstance(exc, Exception) or isinstance(exc, AdmissionError):
        return None
    failure = classify(exc)
    if failure.kind is not FailureKind.RATE_LIMITED:
        return None
    return DEFAULT_PAUSE if failure.retry_after is None else failure.retry_after

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: Any) -> float | None:
    """Seconds from an OpenAI reset header: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5"``."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:  # ("inf" paused the key for ever, "nan" read as 0 s: neither is a duration)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_reset(value: Any, *, now: float | None = None) -> float | None:
    """Seconds until a reset header's moment: an OpenAI duration (:func:`parse_duration`) or an
    RFC 3339 timestamp, as Anthropic sends (``2026-01-01T12:00:30Z``), measured from ``now``
    (Unix seconds, default the wall clock: ``clock.wall``); a moment past is 0.0."""
    seconds = parse_duration(value)
    if seconds is not None or value is None:
        return seconds
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    if moment.tzinfo is None:  # RFC 3339 always has an offset; without one, UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - (clock.wall() if now is None else now))


#: ``(unit, remaining, reset, limit)`` header names: OpenAI's (Azure's, LiteLLM's proxy's),
#: then Anthropic's (its ``-tokens-`` is the tightest of its input and output limits).
_NAMES = {unit: [(f"x-ratelimit-remaining-{unit}", f"x-ratelimit-reset-{unit}",
                  f"x-ratelimit-limit-{unit}")] for unit in ("requests", "tokens")}
for _unit in ("requests", "tokens", "input-tokens", "output-tokens"):
    _NAMES.setdefault(_unit, []).append(tuple(
        f"anthropic-ratelimit-{_unit}-{field}" for field in ("remaining", "reset", "limit")))


#: What every name read here contains (lower-cased): ``_NAMES``, ``latency.PROCESSING``, and
#: a retry-after (``report``).
_READ = ("ratelimit-", "retry-after", *(name for name, _ in PROCESSING))


def says_nothing(headers: Mapping[str, str]) -> bool:
    """True when no name of ``headers`` is one read here (a rate limit, the server's own time
    on the request) nor a retry-after: the names joined, lower-cased and searched in C (half
    the nine lookups of the names read, and none of their frames: an upstream that says
    nothing pays this on every answer). A name that only contains one errs on reading."""
    try:
        names = ",".join(headers).lower()
    except TypeError:  # not a mapping of names: read as it is
        return False
    for part in _READ:
        if part in names:
            return False
    return True


def _readings(headers: Mapping[str, str]
              ) -> Iterator[tuple[str, int, float | None, int | None, bool]]:
    """``(unit, remaining, reset seconds or None, limit or None, moment)`` for each unit
    (``requests``, ``tokens``, ``input-tokens``, ``output-tokens``) reported; ``moment``: the
    reset is a moment (Anthropic's RFC 3339 times), so the reading is as of the answer, not a
    duration from when the server counted the request."""
    get = getattr(headers, "get", None)
    if get is None:
        return
    for unit, names in _NAMES.items():
        for remaining, reset, limit in names:
            left = _count(get(remaining))
            if left is not None:
                value = get(reset)
                yield (unit, left, parse_reset(value), _count(get(limit)),
                       value is not None and parse_duration(value) is None)


def rate_limit_headers(
        headers: Mapping[str, str]) -> Iterator[tuple[bool, int, float | None, int | None]]:
    """``(tokens, remaining, reset seconds or None, limit or None)`` for each of ``requests``
    (``tokens=False``) and ``tokens`` whose ``x-ratelimit-remaining-*`` (or Anthropic's
    ``anthropic-ratelimit-*-remaining``) header is present and readable (LiteLLM's proxy sends
    it without a reset; OpenAI with ``x-ratelimit-reset-*`` and ``x-ratelimit-limit-*``)."""
    for unit, left, reset, limit, _ in _readings(headers):
        if unit in ("requests", "tokens"):
            yield unit == "tokens", left, reset, limit


def part_headers(headers: Mapping[str, str]) -> Iterator[tuple[str, int, float, int | None]]:
    """``(part, remaining, reset seconds, limit or None)`` for Anthropic's input and output
    token limits (``part`` ``"input"`` / ``"output"``) reported with a reset time."""
    for unit, left, reset, limit, _ in _readings(headers):
        if unit.endswith("put-tokens") and reset is not None:
            yield unit[:-len("-tokens")], left, reset, limit


def _count(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # ("nan"; "inf", or past a float's range)
        return None


def report(backend: Any, quotas: Any, learning: bool, headers: Mapping[str, str],
           key: Hashable, line: Any) -> None:
    """Hand what ``headers`` say to ``backend``: every reading to a learning backend
    (``observe``, against the reservation of the call being sent through ``line``'s layer,
    if it is; as of now when its reset is a moment), else the ones with a reset time
    (``cap``). Input and output readings go to a ``split_backend.SplitBackend`` only."""
    held = HELD.get()
    ticket = held.ticket if held and held.line is line and held.key == key else None
    split = any(q.part for q in quotas)
    heard = False
    for unit, left, reset, limit, moment in _readings(headers):
        heard = True
        part = unit[:-len("-tokens")] if unit.endswith("put-tokens") else ""
        if part and (not split or reset is None):
            continue
        where = {"part": part} if part else {}
        if learning:
            backend.observe(key, quotas, unit != "requests", left, reset, ticket=ticket,
                            limit=limit, **where, **({"as_of_now": True} if moment else {}))
        elif reset is not None:
            backend.cap(key, quotas, unit != "requests", left, reset, **where)
        if part == "output" and limit is not None:  # does the server give output back?
            backend.read_output(key, left, limit, ticket, STARTED.get())
    if learning and not heard and not any("retry-after" in name.lower() for name in headers):
        unsaid(backend, quotas, key)


def unsaid(backend: Any, quotas: Any, key: Hashable) -> None:
    """An answer (no 429's) said nothing of ``key``'s rate limits: a learning backend that
    has ``unsaid`` may probe the server (:mod:`.silent`)."""
    if callable(getattr(backend, "unsaid", None)):
        backend.unsaid(key, quotas)


def refusal(backend: Any, quotas: Any, learning: bool, key: Hashable, exc: BaseException,
            ticket: Any) -> float | None:
    """After ``exc``: the pause when it is a 429 (None otherwise), handed to ``backend``
    (``refused`` with the ticket of the refused request to a learning backend, and the quota
    its message names when it names one (:mod:`.named`), else ``pause``)."""
    pause = pause_after(exc)
    if pause is not None:
        if learning:
            which = named(exc)  # passed only when said: a backend written before takes none
            backend.refused(key, quotas, pause, ticket=ticket,
                            **({"named": which} if which is not None else {}))
        else:
            backend.pause(key, quotas, pause)
    return pause


def learned(backend: Any, quotas: Any, key: Hashable) -> tuple[str, int | None, int | None]:
    """What ``backend`` learned about the server for ``key``: the shape and why, the requests
    and tokens limits in force (the quotas' when it learns nothing)."""
    if callable(getattr(backend, "shape", None)):
        return (backend.shape(key, quotas), *backend.limits(key, quotas))
    return ("", min((q.limit for q in quotas if not q.tokens), default=None),
            min((q.limit for q in quotas if q.tokens), default=None))


def sent(backend: Any, quotas: Any, key: Hashable, tokens: int, at: float | None) -> None:
    """Count a request of ``tokens`` sent at loop time ``at`` (None: now) without a
    reservation, if ``backend`` can (``sent``; Redis cannot)."""
    if callable(getattr(backend, "sent", None)):
        backend.sent(key, quotas, tokens, clock.now() if at is None else at)


def spend(backend: Any, quotas: Any, key: Hashable) -> None:
    """Count every quota of ``key`` as used up now (``spent``, else a cap of nothing)."""
    if callable(getattr(backend, "spent", None)):
        backend.spent(key, quotas)
        return
    for tokens in {q.tokens for q in quotas}:
        backend.cap(key, quotas, tokens, 0, max(q.window for q in quotas))
