"""FairQueue, the order of every admission line: priority, then partitions in turn, then first
come; leavers anywhere in O(1), never served, never left behind."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from llmguard._admission.fair import FairQueue

OPS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(-1, 1), st.sampled_from("abc"), st.booleans()),
    st.tuples(st.just("pop")),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("serve"), st.integers(0, 50)),
), max_size=80)


class Model:
    """The order spelled out with lists: priority -> [partition, [waiters]] in turn order."""

    def __init__(self) -> None:
        self.classes: dict[int, list[list]] = {}

    def push(self, item, priority, partition, first) -> None:
        turn = self.classes.setdefault(priority, [])
        entry = next((e for e in turn if e[0] == partition), None)
        if entry is None:
            entry = [partition, []]
            turn.append(entry)
        entry[1].insert(0, item) if first else entry[1].append(item)

    def head(self):
        if not self.classes:
            return None
        return self.classes[max(self.classes)][0][1][0]

    def serve(self, item, priority, partition) -> None:
        """``item`` was served: its partition's turn is over (to the end of the round)."""
        turn = self.classes[priority]
        entry = next(e for e in turn if e[0] == partition)
        entry[1].remove(item)
        turn.remove(entry)
        if entry[1]:
            turn.append(entry)
        if not turn:
            del self.classes[priority]


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_fair_queue_serves_in_the_documented_order(ops) -> None:
    """Property: for any pushes (at the end or the front of a partition), pops, waiters giving
    up anywhere and waiters served out of turn, the head and every pop match the order spelled
    out with lists, and nothing of a leaver is ever served."""
    loop = asyncio.new_event_loop()
    try:
        queue, model = FairQueue(), Model()
        live: list = []  # (future, fifo, priority, partition)
        for op in ops:
            if op[0] == "push":
                _, priority, partition, first = op
                future = loop.create_future()
                fifo = queue.push(future, priority, partition, first=first)
                live.append((future, fifo, priority, partition))
                model.push(future, priority, partition, first)
            elif op[0] == "pop":
                taken = queue.pop()
                expected = model.head()
                assert (taken and taken[0]) is expected
                if taken is not None:
                    future, fifo = taken
                    entry = next(e for e in live if e[0] is future)
                    assert fifo.priority == entry[2] and fifo.partition == entry[3]
                    live.remove(entry)
                    model.serve(future, entry[2], entry[3])
                    future.set_result(None)
            elif live:
                future, fifo, priority, partition = live.pop(op[1] % len(live))
                if op[0] == "cancel":
                    future.cancel()
                    queue.discard(fifo)
                    # A leaver's partition keeps its place in the round.
                    turn = model.classes[priority]
                    at = next(i for i, e in enumerate(turn) if e[0] == partition)
                    turn[at][1].remove(future)
                    if not turn[at][1]:
                        del turn[at]
                    if not turn:
                        del model.classes[priority]
                else:
                    future.set_result(None)
                    queue.served(fifo)
                    model.serve(future, priority, partition)
            assert queue.head() is model.head()
            assert bool(queue) == bool(model.classes)
        assert [f for f in queue] == [f for p in sorted(model.classes, reverse=True)
                                      for _, items in model.classes[p] for f in items]
    finally:
        loop.close()


def test_a_tenant_that_queued_many_does_not_starve_one_that_queued_few() -> None:
    """Two partitions alternate whatever their backlog; a higher priority goes first."""
    loop = asyncio.new_event_loop()
    try:
        queue = FairQueue()
        names = {}
        for name, priority, partition in [("a1", 0, "a"), ("a2", 0, "a"), ("a3", 0, "a"),
                                          ("b1", 0, "b"), ("b2", 0, "b"), ("high", 1, "b")]:
            future = loop.create_future()
            names[future] = name
            queue.push(future, priority, partition)
        order = []
        while (taken := queue.pop()) is not None:
            order.append(names[taken[0]])
            taken[0].set_result(None)
        assert order == ["high", "a1", "b1", "a2", "b2", "a3"] and not queue
    finally:
        loop.close()


def test_leavers_do_not_pile_up() -> None:
    """Waiters giving up behind a head that stays leave their FIFO compacted (amortised O(1)),
    and a partition whose last waiter left is gone."""
    loop = asyncio.new_event_loop()
    try:
        queue = FairQueue()
        head = loop.create_future()
        queue.push(head, 0, "a")
        for _ in range(1000):
            future = loop.create_future()
            fifo = queue.push(future, 0, "a")
            future.cancel()
            queue.discard(fifo)
        assert len(fifo) <= 2 * fifo.live + 16
        lone = loop.create_future()
        other = queue.push(lone, 0, "b")
        lone.cancel()
        queue.discard(other)
        assert list(queue) == [head] and queue.head() is head
    finally:
        loop.close()
