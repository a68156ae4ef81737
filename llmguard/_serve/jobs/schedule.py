"""Which claimed line a worker of this replica answers next: fair across tenants, and no worker
ever sleeps on a tenant's quota.

Lines wait here by priority class, then round-robin across tenants (FIFO within one), so one
tenant's 300-line job cannot hold up another tenant's single line. A line its tenant's quota
refused is put aside until the quota has room (``defer``) and the tenant is paused meanwhile:
its other lines stay queued and the workers serve other tenants, instead of each sleeping in a
retry loop. A tenant with a concurrency cap never has more lines running here than its cap.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Any, NamedTuple

__all__ = ["BATCH", "Schedule", "Task"]

#: The index of a batch job's one task: the whole job, through the provider's batch API.
BATCH = -1


class Task(NamedTuple):
    """One line to answer, as a store's ``claim`` hands it out."""

    job_id: str
    index: int
    #: The store's handle for ``ack`` (a Redis stream entry; None in memory).
    token: Any
    tenant: str
    priority: int
    #: Loop time of the first try (set when its quota first refused it), for the patience.
    since: float | None = None


class Schedule:
    """The waiting lines of this replica (see the module doc). ``caps`` maps a tenant to the
    most lines it may have running at once (its concurrency cap)."""

    __slots__ = ("_queues", "_later", "_paused", "_running", "_caps", "_seq")

    def __init__(self, caps: dict[str, int] | None = None) -> None:
        #: priority -> tenant -> its lines; a dict's order is the round-robin turn.
        self._queues: dict[int, dict[str, deque[Task]]] = {}
        self._later: list[tuple[float, int, Task]] = []
        self._paused: dict[str, float] = {}
        self._running: dict[str, int] = {}
        self._caps = caps or {}
        self._seq = itertools.count()

    def add(self, task: Task, *, front: bool = False) -> None:
        tenants = self._queues.setdefault(task.priority, {})
        line = tenants.get(task.tenant)
        if line is None:
            line = tenants[task.tenant] = deque()
        if front:
            line.appendleft(task)
        else:
            line.append(task)

    def defer(self, task: Task, until: float) -> None:
        """Keep ``task`` aside until loop time ``until``; its tenant is paused until then."""
        heapq.heappush(self._later, (until, next(self._seq), task))
        self._paused[task.tenant] = max(until, self._paused.get(task.tenant, until))

    def paused(self, now: float) -> set[str]:
        """Tenants whose lines may not run now (quota refused, or at their concurrency cap)."""
        for tenant in [t for t, until in self._paused.items() if until <= now]:
            del self._paused[tenant]
        busy = {t for t, n in self._running.items() if n >= self._caps.get(t, n + 1)}
        return busy | set(self._paused)

    def next(self, now: float) -> Task | None:
        """The line to answer now (marked running: call :meth:`done` after), or None."""
        while self._later and self._later[0][0] <= now:
            self.add(heapq.heappop(self._later)[2], front=True)
        skip = self.paused(now)
        for priority in sorted(self._queues, reverse=True):
            tenants = self._queues[priority]
            for tenant in list(tenants):
                if tenant in skip:
                    continue
                line = tenants.pop(tenant)  # its turn is over: to the back of the round
                task = line.popleft()
                if line:
                    tenants[tenant] = line
                if not tenants:
                    del self._queues[priority]
                self._running[tenant] = self._running.get(tenant, 0) + 1
                return task
        return None

    def done(self, task: Task) -> None:
        """``task`` (from :meth:`next`) is no longer running here."""
        left = self._running[task.tenant] - 1
        if left:
            self._running[task.tenant] = left
        else:
            del self._running[task.tenant]

    def next_due(self) -> float | None:
        """When the first line put aside may go (None: nothing is)."""
        return self._later[0][0] if self._later else None

    def tokens(self) -> list[Any]:
        """The store tokens of every line waiting here (kept claimed by the heartbeat)."""
        waiting = [t for tenants in self._queues.values() for line in tenants.values()
                   for t in line]
        return [t.token for t in (*waiting, *(entry[2] for entry in self._later))
                if t.token is not None]

    def __len__(self) -> int:
        return sum(len(line) for tenants in self._queues.values()
                   for line in tenants.values()) + len(self._later)

    def __repr__(self) -> str:
        return (f"<Schedule waiting={len(self)} later={len(self._later)} "
                f"paused={sorted(self._paused)} running={self._running}>")
