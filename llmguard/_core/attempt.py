"""``Attempt``: the facts of one attempt of a call, owned by the layer that starts it.

Retry starts one per try and Fallback one per alternate (README, "Who owns what in a call"):
the attempt's number, the deadline it must start by, the tokens a rate limit reserved for it,
whether it reached the provider, the provider's response headers, the argument overrides it
runs with, and the hooks inner layers hang on it. The call points at its current attempt
(``call.current``); the starting layer puts the previous one back when it is done, so nothing of
one attempt or alternate leaks into the next or outward.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, Generic, TypeVar

__all__ = ["Attempt", "Hooks", "with_hook", "without_hook"]

F = TypeVar("F", bound=Callable[..., Any])


class Hooks(list[F], Generic[F]):
    """Callbacks an attempt runs at one moment, in the order they were added: outer layers
    first (they add theirs before the call reaches inner ones), so an inner hook sees what the
    outer ones did (an outer rate limit has counted the request again). :meth:`add` returns the
    function that removes the hook; a layer on the path of every call appends its hook and
    passes it to :meth:`discard` in its ``finally`` instead (no remover object).

    A list itself, not an object holding one: a call queued under ``asyncio.gather`` holds its
    hooks while it waits, and every object it holds is one more for each garbage collection
    to walk (two hooks a call in the README's stack: a list, a remover and its argument tuple
    each, six objects fewer per call in flight)."""

    __slots__ = ()

    def add(self, fn: F) -> Callable[[], None]:
        """Add ``fn``; returns its remover (calling it twice is harmless)."""
        self.append(fn)
        return partial(_remove, self, fn)  # one object a hook (a closure makes four)

    def discard(self, fn: F) -> None:
        """Take out one adding of ``fn`` (the last one added first; nothing if it is not
        there): the remover :meth:`add` returns, without the object."""
        _remove(self, fn)

    def __iter__(self) -> Iterator[F]:
        return iter(self.copy())  # a hook may remove itself while they run


def _remove(fns: list[Any], fn: Any) -> None:
    """Take ``fn`` out of ``fns`` (a :meth:`Hooks.add` remover; nothing if it is not there)."""
    if fns and fns[-1] is fn:  # the common case: layers unhook in the reverse order
        del fns[-1]
        return
    for i in range(len(fns) - 2, -1, -1):
        if fns[i] is fn:
            del fns[i]
            return


def with_hook(hooks: Any, fn: Any) -> Any:
    """``hooks`` (None, one hook or a :class:`Hooks`) with ``fn`` added last."""
    if hooks is None:
        return fn
    if type(hooks) is Hooks:
        hooks.append(fn)
        return hooks
    return Hooks((hooks, fn))


def without_hook(hooks: Any, fn: Any) -> Any:
    """``hooks`` (None, one hook or a :class:`Hooks`) with one adding of ``fn`` taken out."""
    if hooks is fn:
        return None
    if type(hooks) is Hooks:
        _remove(hooks, fn)
    return hooks


def _listed(hooks: Any) -> Any:
    """``hooks`` (None, one hook or a :class:`Hooks`) to iterate over, as they are now."""
    if hooks is None:
        return ()
    return (hooks,) if type(hooks) is not Hooks else hooks.copy()


class Attempt:
    """One attempt: made by the call (the first), by Retry (each try) and by Fallback (each
    alternate), from the attempt it starts inside (its ``deadline`` carries over)."""

    __slots__ = ("number", "deadline", "tokens", "sent", "overrides", "response_headers",
                 "resume_at", "parent", "deferred", "_on_send", "_on_wait")

    def __init__(self, number: int = 1, deadline: float | None = None,
                 parent: Attempt | None = None, *,
                 overrides: Mapping[str, Any] | None = None) -> None:
        #: 1 for the first attempt; Retry counts them.
        self.number = number
        #: Absolute loop time after which no new attempt should start, or None.
        self.deadline = deadline
        #: Token estimate a rate limiter reserved for this attempt, if any.
        self.tokens: int | None = None
        #: True once this attempt reached the provider (the innermost handler called it).
        self.sent = False
        #: Arguments this attempt runs with instead of the call's (Fallback's ``{"model": ...}``).
        self.overrides: Mapping[str, Any] | None = overrides
        #: The provider's HTTP response headers, written by the terminal or an integration.
        self.response_headers: Mapping[str, str] | None = None
        #: Loop time the retry of this attempt's 429 may go, set by a rate limit below that
        #: paused its key and holds the retry itself until the server admits again (a learned
        #: clock minute resets sooner than the 60 s Retry-After LiteLLM's proxy always sends);
        #: Retry waits no longer. None otherwise.
        self.resume_at: float | None = None
        #: The attempt this one runs inside (a Retry's inside a Fallback's alternate, or the
        #: call's first): the layers that hooked it are still waiting on this attempt, so its
        #: hooks run too, and it counts as sent once this one is.
        self.parent = parent
        #: An outer rate limit's reservation left to the limiter right below it (it deferred
        #: it while its calls wait in that limiter's queue): that limiter, letting the call go
        #: without a wait, calls it and awaits what it returns (as it would ``on_wait``'s).
        self.deferred: Callable[[], Awaitable[None] | None] | None = None
        self._on_send: Any = None  # None, one hook, or a Hooks list (below)
        self._on_wait: Any = None

    # An attempt's hooks of one moment are None, one hook, or a :class:`Hooks` list: the
    # README's stack hooks each moment once (Timeout on send, RateLimit on wait), and a call
    # waiting for admission under ``gather`` would otherwise hold a list for each, two more
    # objects for every garbage collection to walk.

    @property
    def on_send(self) -> Hooks[Callable[[], None]]:
        """Run when the attempt reaches the provider (Timeout starts its clock there)."""
        hooks = self._on_send
        if type(hooks) is not Hooks:
            hooks = self._on_send = Hooks() if hooks is None else Hooks((hooks,))
        return hooks

    @property
    def on_wait(self) -> Hooks[Callable[[], Awaitable[None] | None]]:
        """Run when an inner limiter lets the attempt go after a wait, what each returns
        awaited (None: done at once): an outer rate limit counts the request again from then,
        when the provider will see it (RateLimit)."""
        hooks = self._on_wait
        if type(hooks) is not Hooks:
            hooks = self._on_wait = Hooks() if hooks is None else Hooks((hooks,))
        return hooks

    # The four below write out the common case (no hook yet; the one hook taken out): every
    # call runs two of each pair in the README's stack.

    def add_on_send(self, fn: Callable[[], None]) -> None:
        """``on_send.add(fn)`` without a remover or a list for the first hook: take it out
        with :meth:`discard_on_send` (a layer on the path of every call does this)."""
        hooks = self._on_send
        self._on_send = fn if hooks is None else with_hook(hooks, fn)

    def discard_on_send(self, fn: Callable[[], None]) -> None:
        """Take out one adding of ``fn`` from ``on_send`` (nothing if it is not there)."""
        hooks = self._on_send
        self._on_send = None if hooks is fn else without_hook(hooks, fn)

    def add_on_wait(self, fn: Callable[[], Awaitable[None] | None]) -> None:
        """``on_wait.add(fn)`` without a remover or a list for the first hook: take it out
        with :meth:`discard_on_wait`."""
        hooks = self._on_wait
        self._on_wait = fn if hooks is None else with_hook(hooks, fn)

    def discard_on_wait(self, fn: Callable[[], Awaitable[None] | None]) -> None:
        """Take out one adding of ``fn`` from ``on_wait`` (nothing if it is not there)."""
        hooks = self._on_wait
        self._on_wait = None if hooks is fn else without_hook(hooks, fn)

    def send_hooks(self) -> Iterable[Callable[[], None]]:
        """The ``on_send`` hooks, as they are now (a hook may remove itself while they run)."""
        return _listed(self._on_send)

    def wait_hooks(self) -> Iterable[Callable[[], Awaitable[None] | None]]:
        """The ``on_wait`` hooks, as they are now."""
        return _listed(self._on_wait)

    def _lineage(self) -> list[Attempt]:
        """This attempt and those it runs inside, outermost first."""
        chain: list[Attempt] = []
        attempt: Attempt | None = self
        while attempt is not None:
            chain.append(attempt)
            attempt = attempt.parent
        chain.reverse()
        return chain

    def reached_provider(self) -> None:
        """Mark the attempt (and those it runs inside) sent and run their ``on_send`` hooks,
        outermost first (``Call.mark_sent`` calls it)."""
        parent = self.parent
        if parent is None or (parent.parent is None and parent._on_send is None):
            # the common cases: no Retry or Fallback made this one, or one made it inside the
            # call's first attempt, hooked by none (``_lineage`` below, written out)
            if parent is not None:
                parent.sent = True
            self.sent = True
            hooks = self._on_send
            if hooks is not None:
                if type(hooks) is not Hooks:  # one hook (Timeout's)
                    hooks()
                else:
                    for send in hooks.copy():
                        send()
            return
        for attempt in self._lineage():
            attempt.sent = True
            if attempt._on_send is not None:
                for send in _listed(attempt._on_send):
                    send()

    async def admitted_after_wait(self) -> None:
        """Await the ``on_wait`` hooks of this attempt and those it runs inside, outermost
        first (``Call.waited`` calls it); one may raise (an outer rate limit found no room)."""
        for attempt in self._lineage():
            if attempt._on_wait is not None:
                for recount in _listed(attempt._on_wait):
                    pending = recount()
                    if pending is not None:
                        await pending

    def __repr__(self) -> str:
        return (f"<Attempt {self.number} deadline={self.deadline} tokens={self.tokens} "
                f"sent={self.sent}>")
