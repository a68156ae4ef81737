"""A provider's concurrency cap, learned from refusals at the edge of what succeeded.

Some providers accept up to N calls at once and answer the next one with an instant 429 or 503,
with no latency rise before (a gateway's concurrency limit). Latency says nothing there, so
:class:`~llmguard.AdaptiveConcurrency` kept growing into the refusals, and since an instant 429
frees its permit for the next waiter at once, 47% of all calls were 429s. :class:`Cap` keeps
what settles it: the most calls in flight at a success lately (the edge), the calls started and
refused beyond it, the cap once found, and when to probe one step past it again. Plain state
without a loop or a limiter, so the layer's calls into it are the whole protocol.
"""

from __future__ import annotations

__all__ = ["Cap"]

#: Round trips held at a cap before probing one permit past it; four times as many after each
#: probe that finds the cap again, up to MAX_PROBE_EVERY.
FIRST_PROBE_EVERY, MAX_PROBE_EVERY = 4, 256

UNSEEN = 1 << 62


class Cap:
    """The learned cap (``ceiling``, None until a refusal shows one) and the evidence for it."""

    __slots__ = ("ok", "ok_before", "ceiling", "probe_every", "probe_step", "held", "calls",
                 "drops", "low", "probing")

    def __init__(self) -> None:
        self.ok = self.ok_before = 0  # most in flight at a success, this round trip and the last
        #: The provider's cap, learned from refusals beyond it (None: none seen).
        self.ceiling: int | None = None
        self.probe_every = FIRST_PROBE_EVERY  # round trips at the cap between probes past it
        self.probe_step = 1
        self.held = 0  # round trips held at the cap since the last probe
        self.calls = self.drops = 0  # calls started, refused beyond the edge
        self.low = UNSEEN  # the lowest in-flight count refused beyond the edge
        self.probing = 0  # round trips left in a probe one step past the cap

    def started(self, inflight: int) -> None:
        """A call started with ``inflight`` calls in flight (itself included)."""
        if inflight > self.ok and inflight > self.ok_before:
            self.calls += 1

    def succeeded(self, inflight: int) -> None:
        self.ok = max(self.ok, inflight)

    def refused(self, inflight: int, limit: int) -> int | None:
        """A call started at ``inflight`` was refused (429/503): the in-flight count to cap
        below if this shows the cap, else None (the drop counts in the round trip's window)."""
        edge = max(self.ok, self.ok_before)
        if 2 * edge < limit:
            return None  # hardly any success lately: a storm of 429s, not a cap on concurrency
        if self.probing:  # a probe past the cap was refused: the cap holds
            return min(inflight, limit)
        if inflight <= edge:
            return None
        # Beyond the edge. When most calls started there are refused, the cap is just below
        # it. Two drops, not one: a steady trickle of 429s from a shared quota also hits the
        # edge now and then.
        self.drops += 1
        self.low = min(self.low, inflight)
        if self.drops >= 2 and 2 * self.drops >= self.calls:
            return self.low
        return None

    def found(self, inflight: int) -> int:
        """Record the cap below a refusal at ``inflight``; returns it."""
        self.calls = self.drops = 0
        self.low = UNSEEN
        if self.probing:  # the probe found the cap where it was: probe less often
            self.probe_every = min(4 * self.probe_every, MAX_PROBE_EVERY)
            self.probing = 0
        # Below the refused call, and at most the most calls lately seen succeeding together
        # (calls granted at once all see the same count: the refused one's is an upper bound).
        self.ceiling = max(min(inflight - 1, max(self.ok, self.ok_before)), 1)
        self.probe_step, self.held = 1, 0
        return self.ceiling

    def round_trip(self) -> None:
        """A round trip's window closed."""
        if self.probing:  # round trips past the cap without a drop: the probe passed
            self.probing -= 1
        if self.ok > self.ok_before:  # the edge moved up: count afresh beyond it
            self.calls = self.drops = 0
            self.low = UNSEEN
        self.ok_before, self.ok = self.ok, 0

    def crowded(self, share: float, limit: int) -> None:
        """A round trip at the cap with ``share`` of its calls refused while successes went
        on: the cap sits lower than the first refusal showed (the count in flight when a call
        starts includes calls the provider has just finished)."""
        if (share >= 0.25 and self.ceiling is not None and limit >= self.ceiling
                and 2 * self.ok_before >= limit):
            self.ceiling = max(self.ceiling - 1, 1)
            self.probe_every = min(4 * self.probe_every, MAX_PROBE_EVERY)

    def clamp(self, new: float) -> float:
        """The algorithm's new limit, held at the cap; now and then one probe step past it."""
        ceiling = self.ceiling
        if ceiling is None or new <= ceiling:
            return new
        self.held += 1
        if self.held >= self.probe_every:
            self.held = 0
            self.ceiling = ceiling = ceiling + self.probe_step
            self.probe_step *= 2  # each probe that passes probes further
            self.probing = 2  # round trips (the next may end before the probe's calls)
        return ceiling
