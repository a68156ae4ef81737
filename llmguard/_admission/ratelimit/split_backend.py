"""The backend behind ``RateLimit(input_tpm=, output_tpm=)``: input, output and other quotas
reserved together. The backends know one kind of token: :class:`SplitBackend` keeps the input
and output quotas under keys of their own (:class:`Part`) in the same backend, next to the
layer's request and total-token quotas under the key itself, and admits a call only when all of
them have room: the :class:`~llmguard.RateLimitBackend` protocol stays as it is, and the Redis
backend shares the parts across processes as it shares any key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

from ..._core.tokens import estimate_tokens
from .backend import MemoryBackend, TakesNow
from .headers import learned, spend
from .split_giveback import GiveBackParts, GiveBacks
from .split import (Part, Tokens, Ticket, amount as _amount, check_fits, layout,
                    split_estimate, split_used, too_large)
from .shape import TOLERANCE
from .window import Quota

__all__ = ["Part", "SplitBackend", "check_fits", "setup", "split_used", "too_large"]


class SplitBackend(GiveBackParts):
    """A :class:`~llmguard.RateLimitBackend` over ``inner`` for quotas with ``part`` set: the
    request and total-token quotas under the key, ``input`` / ``output`` ones under
    ``Part(part, key)``. A reservation takes room in all of them or in none.

    In memory the check and the taking are one synchronous step; through a remote backend the
    windows are reserved in turn, those taken refunded when one has no room. The output is
    given back to the output used once the server is seen doing so (:mod:`.giveback`,
    :mod:`.split_giveback`)."""

    __slots__ = ("inner", "take", "_layouts", "giveback")

    def __init__(self, inner: Any) -> None:
        self.inner = inner  #: The backend holding every window.
        #: ``reserve`` without the coroutine, when ``inner`` is in memory (else None).
        self.take = self._take if isinstance(inner, MemoryBackend) else None
        self._layouts: dict[tuple[Quota, ...], list[tuple[str, tuple[Quota, ...]]]] = {}
        self.giveback = GiveBacks()  # per key (:mod:`.giveback`)

    def _layout(self, quotas: tuple[Quota, ...]) -> list[tuple[str, tuple[Quota, ...]]]:
        return layout(self._layouts, quotas)

    @staticmethod
    def _key(part: str, key: Hashable) -> Hashable:
        return Part(part, key) if part else key

    def _take(self, key: Hashable, quotas: tuple[Quota, ...], tokens: Any) -> Ticket | None:
        if self._hold(key, tokens) > 0.0:
            return None
        now = asyncio.get_running_loop().time()
        windows = [(self._key(part, key), self.inner.window(self._key(part, key), sub), part)
                   for part, sub in self._layout(quotas)]
        for _, window, part in windows:
            if window.wait(now, _amount(part, tokens)) > 0.0:
                return None
        ticket = Ticket([(sub, window.add(now, _amount(part, tokens)), part)
                         for sub, window, part in windows], tokens)
        return self._admitted(key, quotas, ticket)

    async def reserve(self, key: Hashable, quotas: tuple[Quota, ...],
                      tokens: Any) -> tuple[float, Any]:
        inner = self.inner
        if (hold := self._hold(key, tokens)) > 0.0:
            return hold, None
        if self.take is not None:
            ticket = self.take(key, quotas, tokens)
            if ticket is not None:
                return 0.0, ticket
            now = asyncio.get_running_loop().time()
            return max(inner.window(self._key(part, key), sub).wait(now, _amount(part, tokens))
                       for part, sub in self._layout(quotas)), None
        taken: list[tuple[Hashable, Any, str]] = []
        try:
            for part, sub in self._layout(quotas):
                name = self._key(part, key)
                wait, ticket = await inner.reserve(name, sub, _amount(part, tokens))
                if ticket is None:
                    self._give_back(taken)
                    return wait, None
                taken.append((name, ticket, part))
        except BaseException:
            self._give_back(taken)
            raise
        return 0.0, self._admitted(key, quotas, Ticket(taken, tokens))

    def _give_back(self, taken: list[tuple[Hashable, Any, str]]) -> None:
        for name, ticket, _ in taken:
            self.inner.refund(name, ticket)
        taken.clear()

    def reconcile(self, key: Hashable, ticket: Ticket, tokens: int) -> None:
        if not isinstance(tokens, Tokens):  # a total only: the input stays as reserved
            reserved = ticket.tokens
            base = reserved.input if isinstance(reserved, Tokens) else 0
            tokens = Tokens(min(base, int(tokens)), max(0, int(tokens) - base))
        back = self.giveback.get(key)
        for name, entry, part in ticket.taken:
            if part == "output" and back is not None:  # unused output back once seen given back
                back.ended(asyncio.get_running_loop().time(), tokens.output,
                           _amount(part, ticket.tokens), partial(self.inner.reconcile, name, entry),
                           entry)
            else:
                self.inner.reconcile(name, entry, _amount(part, tokens))
        if back is not None:  # a probe served decides (``GiveBack.ended``)
            self._tell(key, back)

    def refund(self, key: Hashable, ticket: Ticket) -> None:
        self._uncharged(key, ticket)
        self._give_back(ticket.taken)

    def pause(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float) -> None:
        for part, sub in self._layout(quotas):
            self.inner.pause(self._key(part, key), sub, seconds)

    def cap(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
            reset: float, part: str = "") -> None:
        """As the protocol's; ``part`` names the input or output quotas the report is about.
        A report of all tokens (Anthropic's ``-tokens-``: the tightest of input and output)
        caps only a total ``tpm``, if the layer has one."""
        for name, sub in self._layout(quotas):
            if name == part and (not tokens or any(q.tokens for q in sub)):
                self.inner.cap(self._key(part, key), sub, tokens, remaining, reset)

    def observe(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
                reset: float | None, *, ticket: Any = None, limit: int | None = None,
                part: str = "", as_of_now: bool = False) -> None:
        """:class:`~llmguard.LearningBackend`'s, for the ``part`` quotas (as :meth:`cap`):
        each part learns its own shape from its own readings (Anthropic's
        ``anthropic-ratelimit-input-tokens-*``), read against its own reservation of ``ticket``
        (``as_of_now``: as of the answer). Over a backend that learns nothing: cap."""
        if not callable(getattr(self.inner, "observe", None)):
            if reset is not None:
                self.cap(key, quotas, tokens, remaining, reset, part)
            return
        for name, sub in self._layout(quotas):
            if name == part and (not tokens or any(q.tokens for q in sub)):
                self.inner.observe(self._key(part, key), sub, tokens, remaining, reset,
                                   ticket=self._entry(ticket, part), limit=limit,
                                   **({"as_of_now": True} if as_of_now else {}))

    def refused(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float, *,
                ticket: Any = None, named: Any = None) -> None:
        """A 429: every part pauses; the one its message ``named`` (all: none) learns too."""
        tested = self._uncharged(key, ticket, quotas, named)  # a refused request: not charged
        if not callable(getattr(self.inner, "observe", None)):
            self.pause(key, quotas, seconds)
            return
        said = {} if named is None else {"named": named}
        for part, sub in self._layout(quotas):  # output kept charged explains it: no limit
            # (a bucket's pause, at most its refill of the request; a longer one, to the clock
            # minute, is a window's as well: learned now, not by a second 429 a minute later)
            kept = tested and part == "output" and _refills(sub, _amount(part, ticket.tokens),
                                                            seconds)
            if kept or (said and named.part != part):
                self.inner.pause(self._key(part, key), sub, seconds)
            else:
                self.inner.refused(self._key(part, key), sub, seconds,
                                   ticket=self._entry(ticket, part), **said)

    def shape(self, key: Hashable, quotas: tuple[Quota, ...]) -> str:
        """How each part is paced (``requests: ...; input: ...; output: ...``): what the
        request and total-token quotas learned, and the input and output buckets."""
        shapes = callable(getattr(self.inner, "shape", None))
        said = []
        for part, sub in self._layout(quotas):
            if part and all(q.continuous for q in sub):
                shape = 'bucket (refill="continuous")'
            else:
                shape = self.inner.shape(self._key(part, key), sub) if shapes else ""
            back = self.giveback.get(key) if part == "output" else None
            said.append((part or "requests", shape + (f", {back.describe()}" if back else "")))
        return "; ".join(f"{label}: {shape.lstrip(', ')}" for label, shape in said if shape)

    def limits(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int | None, int | None]:
        """The requests limit in force, and the tightest token limit of any part."""
        requests, tokens = None, None
        for part, sub in self._layout(quotas):
            free_requests, free_tokens = learned(self.inner, sub, self._key(part, key))[1:]
            requests = free_requests if requests is None else requests
            if free_tokens is not None:
                tokens = free_tokens if tokens is None else min(tokens, free_tokens)
        return requests, tokens

    def unsaid(self, key: Hashable, quotas: tuple[Quota, ...]) -> None:  # to every part
        for part, sub in self._layout(quotas) if hasattr(self.inner, "unsaid") else ():
            self.inner.unsaid(self._key(part, key), sub)

    def spent(self, key: Hashable, quotas: tuple[Quota, ...]) -> None:
        """Every part used up now (``RateLimit.assume_spent``)."""
        for part, sub in self._layout(quotas):
            spend(self.inner, sub, self._key(part, key))

    def sent(self, key: Hashable, quotas: tuple[Quota, ...], tokens: Any, at: float) -> None:
        """A request sent without a reservation, counted in each part (when ``inner`` can)."""
        if callable(getattr(self.inner, "sent", None)):
            for part, sub in self._layout(quotas):
                self.inner.sent(self._key(part, key), sub, _amount(part, tokens), at)

    def headroom(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int, int, float]:
        """Requests from the request quotas; tokens the tightest token quota of any part."""
        requests, tokens, paused = None, None, 0.0
        for part, sub in self._layout(quotas):
            free_requests, free_tokens, pause = self.inner.headroom(self._key(part, key), sub)
            paused = max(paused, pause)
            if any(not q.tokens for q in sub):
                requests = free_requests
            if any(q.tokens for q in sub):
                tokens = free_tokens if tokens is None else min(tokens, free_tokens)
        return requests or 0, tokens or 0, paused

    def part_headroom(self, key: Hashable, quotas: tuple[Quota, ...], part: str) -> int | None:
        """Tokens available now in the ``part`` quotas (None when the layer has none)."""
        sub = dict(self._layout(quotas)).get(part)
        return None if sub is None else self.inner.headroom(self._key(part, key), sub)[1]

    def __repr__(self) -> str:
        return f"<SplitBackend input/output over {self.inner!r}>"


def _refills(quotas: tuple[Quota, ...], tokens: int, seconds: float) -> bool:
    """True when a pause of ``seconds`` is no longer than a bucket of ``quotas`` takes to
    refill ``tokens`` (with :data:`.shape.TOLERANCE`)."""
    return seconds <= TOLERANCE + max(tokens * (q.window - q.margin) / q.limit for q in quotas)


def setup(quotas: tuple[Quota, ...], backend: Any,
          tokens: Callable[..., Any] | None) -> tuple[Any, Any, Callable[..., int], bool]:
    """A RateLimit's backend (a :class:`SplitBackend` over it when ``quotas`` have input or
    output parts), its synchronous admission, its token estimator, and whether it splits.

    In memory, admission never suspends (``take``): nobody can overtake a call between its
    check and joining the line, so with nobody waiting it skips the line. A remote reserve
    suspends (a round trip): every call then goes through the line (in order in the process)."""
    backend = MemoryBackend() if backend is None else backend
    split = any(q.part for q in quotas)
    if split:
        backend = SplitBackend(backend)
    take = backend.take if isinstance(backend, (TakesNow, SplitBackend)) else None
    return backend, take, split_estimate(tokens) if split else tokens or estimate_tokens, split
