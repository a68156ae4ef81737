"""Which deployment takes an attempt: a reservation at the first one (in strategy order) with
room now, else a place in the one waiting line across all of them."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from typing import Any

from .._core.call import Call
from .._core.check import admission as check_admission
from .._core.errors import AdmissionTimeout, RequestTooLarge
from .deployment import Deployment
from .line import RouterLine

__all__ = ["Admission"]


class Admission:
    """Grants ``(deployment, ticket)`` for attempts over ``deployments``, in ``order``.

    ``local``: the backend never suspends (in memory), so a call may reserve directly when
    nobody waits; a remote backend's round trips go through the line, which keeps its order."""

    __slots__ = ("deployments", "_order", "_rng", "_local", "line", "rejected")

    def __init__(self, deployments: tuple[Deployment, ...], order: Callable[..., list[Any]],
                 rng: random.Random, local: bool, max_wait: float | None) -> None:
        self.deployments, self._order, self._rng, self._local = deployments, order, rng, local
        #: The one waiting line across the deployments.
        self.line = RouterLine(self._admit, self.give_back, self.describe, max_wait)
        #: Calls refused: RequestTooLarge and AdmissionTimeout.
        self.rejected = 0

    @property
    def strategy(self) -> str:
        return self._order.__name__

    async def _admit(self, tokens: int, excluded: frozenset[Any]) -> tuple[Any, float]:
        """Reserve at the first deployment (in strategy order) with room now: ``((deployment,
        ticket), 0.0)``, else ``(None, seconds until the earliest may have room)``."""
        now = asyncio.get_running_loop().time()
        candidates = [d for d in self.deployments if d not in excluded and d.fits(tokens)]
        wait = math.inf
        for deployment in self._order(candidates, self._rng):
            seconds, ticket = await deployment.reserve(tokens, now)
            if ticket is not None:
                return (deployment, ticket), 0.0
            wait = min(wait, seconds)
        return None, wait

    def give_back(self, grant: tuple[Deployment, Any]) -> None:
        """A grant nobody took (its waiter left): the slot and the reservation go back."""
        deployment, ticket = grant
        deployment.release(ticket, 0, False)
        self.line.wake()

    async def grant(self, call: Call, tokens: int, excluded: frozenset[Any],
                    priority: int) -> Any:
        """A grant for ``call`` at a deployment not in ``excluded``, waiting in line when none
        has room (by ``priority``, then ``call.partition``'s turn; at the front of its partition
        when it is moving on from ``excluded``: it was admitted once already); RequestTooLarge when none could ever take ``tokens``."""
        if not any(d not in excluded and d.fits(tokens) for d in self.deployments):
            self.rejected += 1
            raise call.rejected("router", RequestTooLarge(
                f"the call needs an estimated {tokens} tokens, more than any deployment's token "
                f"quota ({self.describe()}); shorten the prompt or max_tokens"))
        line = self.line
        if self._local and not line.waiting:
            grant, _ = await self._admit(tokens, excluded)  # never suspends in memory
            if grant is not None:
                return grant
        loop = asyncio.get_running_loop()
        started = loop.time()
        check_admission(priority, call.partition, " (in Router)")
        future = line.join(tokens, excluded, priority, call.partition, first=bool(excluded))
        call.queueing()  # an outer rate limit's reservation waits here, not sent
        try:
            grant = await future
        except AdmissionTimeout as exc:
            self.rejected += 1
            raise call.rejected("router", exc) from None
        except BaseException:
            line.leave(future)
            raise
        try:  # record the wait (an outer rate limit may wait again there)
            await call.waited(loop.time() - started, "router")
        except BaseException:
            self.give_back(grant)
            raise
        return grant

    def describe(self) -> str:
        return "; ".join(d.describe() for d in self.deployments)
