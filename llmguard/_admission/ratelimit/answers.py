"""A server whose ``remaining`` counts its answers (or its admissions when it takes a request
from its queue) rather than the requests as they arrive: LiteLLM's proxy reports ``rpm`` less
the successes logged in the minute the answer is made (``Router.get_model_group_usage``).

A loaded proxy may answer a whole burst sent late in a clock minute after the next one (1,024
sent at :41 answered from :08 to :15): no answer straddles the minute, and the readings fit a
sliding window as well as a clock minute. Two things then kept the next minute unused (1.5x
the ideal): the ``remaining`` of 0 its last answers read held as a cap for a window
(:func:`held`: a count ours alone explain holds only until the oldest of ours leaves), and
the minute confirmed only a minute late (:func:`restarted`: the first answer made after it,
to one of ours sent before it, reads a count no server counting ours as they arrive reports).

A proxy's workers taking a burst a turn at a time (4 workers, 2 s each: 32 sent at :58 taken
until :72, 4 of them before the minute) count it late, so such a cap gives room back as each
of ours leaves the count as its answer dates it (:func:`_stairs`, :func:`room`), not all at
once when the log may take over: the first minute's last 3 go at :118, where held to the
boundary's probe they went unused. A 429 to one admitted on that room is read by the
server's word (:func:`full`): the limit less one (its ``rpm - 1``), as the log, which let the
burst go at :118, counts only half of it.

Everything here takes its inputs as arguments (no clock, no asyncio): tested directly.
"""

from __future__ import annotations

from typing import Any

from .others import ours, sent_by, theirs

__all__ = ["Stairs", "first", "full", "held", "latest", "restarted", "room", "sooner"]


class Stairs:
    """Room a cap (``Window.caps``, its last item) gives back before it ends, as ours leave
    the server's count (:func:`_stairs`): ``steps``, ``[when, units]`` oldest first, and the
    ``limit`` its reading counted to (:func:`full`)."""

    __slots__ = ("limit", "steps")

    def __init__(self, limit: int, steps: list[list[float]]) -> None:
        self.limit, self.steps = limit, steps

    def __repr__(self) -> str:
        return f"<Stairs of {self.limit}: {self.steps}>"


def held(window: Any, tracks: list[Any], remaining: int, limit: int | None, ticket: Any,
         now: float, until: float) -> tuple[float, Stairs | None]:
    """Until when a cap of what the server's answer to ``ticket`` left (no reset) holds, at
    most ``until`` (a window from the ticket: the safe reading). When ours alone (with the
    other processes' sharing the key) explain what it counted (``limit`` less ``remaining``):
    ours sent up to the ticket (a server counting arrivals) or ours answered within a window up
    to it (one counting answers, written in an order of its own: the 0 came with the 6th of
    176 sent together), room comes back as ours leave: only until the log may take over (the
    "all answered" 0 of LiteLLM's proxy held the next minute, which had room): ours answered
    explain it, once each the log lets go has left the count as its answer dates it
    (:func:`_first_out`: a proxy that queues counts late); else the oldest sent leaves.
    Held as read until then: a 429 meanwhile is read against it (:func:`.refusal.before`).
    With the steps at which room comes back before then as ours leave the count
    (:func:`_stairs`; None when other processes' are in it)."""
    learners = [t for t in tracks if getattr(t, "log", None) is not None]
    if ticket is None or not learners:
        return until, None
    track = min(learners, key=lambda t: t.limit)
    server = limit or track.limit
    counted = server - remaining
    others = theirs(window, track, lambda e: now - track.window < e.answered <= now)
    if counted <= others + ours(track, lambda e: e is ticket
                                or now - track.window < e.answered <= now):
        until = min([until] + [_first_out(t, now, until) for t in learners])
        steps = None if others else _stairs(learners, track, counted, ticket, now, until)
        return until, Stairs(server, steps) if steps else None
    if counted > sent_by(window, track, ticket):
        return until, None
    return min([until] + [next((e.time + t.window for e in t.log.entries if e.live), until)
                          for t in learners]), None  # (each log in time order: oldest first)


def _first_out(track: Any, now: float, until: float) -> float:
    """When ``track``'s log may take over from a count its answered within a window explain
    (at most ``until``): once every one of ours it lets go (sent a window before) has left the
    server's count too, each counted at the latest its answer allows (:func:`latest`: its
    answer less the least the server worked on one of ours). A server may count a request as it
    arrives and write the answer late (1,024 sent at :40 by ``llmguard run``, every round trip
    22 s: counted at :40) or as a worker takes it from its queue (4 workers, 2 s each: a
    burst sent at :58 taken a worker's turn at a time until :72). Read from the sends, the
    burst queued at :58 was let go at :118 into a minute that had counted most of it from :60
    (29 429s, the limit learned 5 low); read from the answers, the burst answered late at :62
    held the next minute 22 s past the room its arrivals left."""
    answered = [e for e in track.log.entries
                if e.live and not e.refused and now - track.window < e.answered <= now]
    if not answered:
        return until
    dated = latest(answered, [e.answered for e in answered])
    due, last = answered[0].time + track.window, 0
    while due < until:  # each step lets more go: it holds until they are out too
        while last < len(answered) and answered[last].time + track.window <= due:
            last += 1
        out = max(dated[:last]) + track.window
        if out <= due:
            return due
        due = out
    return until


def latest(entries: list[Any], answers: list[float]) -> list[float]:
    """The latest each of ``entries`` (answered at ``answers``) can have been counted: its
    answer less the least a server worked on one of ours (a round trip less its way there and
    back, :attr:`.log.Entry.way`, once its answer's headers timed it: the time to serve one
    not queued; what came before it in an answer was the wait, in a queue or to be written),
    never before it was sent. Less the shortest round trip instead, a cold network's opening
    burst (0.8 s on the way) was dated 0.8 s before a proxy's workers took it, and the room
    of 4 it took at :00.3 came back at :59.5, into a minute that still counted them."""
    trip = min(at - e.time - (getattr(e, "way", None) or 0.0) for e, at in zip(entries, answers))
    return [max(e.time, at - trip) for e, at in zip(entries, answers)]


def _stairs(learners: list[Any], track: Any, counted: int, ticket: Any, now: float,
            until: float) -> list[list[float]]:
    """When room comes back under a cap ours answered explain (``counted`` of ``track``'s
    units), before the log takes over at ``until``: each of ours in the count leaves it a
    window after the latest it was counted (:func:`latest`, as :func:`_first_out` dates
    them; the ticket's answer is now), the oldest first, those
    beyond the count (the server's count dropped them: a clock minute's started since) left
    out. A proxy's 4 workers took a burst sent at :58 until :72, 4 of it before the clock
    minute, 56 of ours in the next: the ``remaining`` of 0 its answers read by :88 held all of
    it until the boundary's probe, and the 3 the proxy's minute still had room for went
    unused (1.21x the ideal). Released a worker's turn at a time, as a window sliding over
    its takes would, the 4 taken at :58 go at :118, and a clock minute counting takes has
    room for them too (or one fewer: its 429 teaches the ``rpm - 1``, :func:`full`). Ours
    from the ticket's ``near`` on may have been counted after it (its bound subtracted them:
    :meth:`.reading.Readings.after`), so only those before it make the count's oldest beyond
    it: a shuffled wave's oldest heard last (57 of 60, its 3 others counted after it) dropped
    3 of the minute's oldest instead, and gave back 1 of the 4 taken at :58 (1.21x)."""
    entries = [e for e in track.log.entries if e.live and not e.refused
               and (e is ticket or now - track.window < e.answered <= now)]
    if not entries:
        return []
    span = max(t.window for t in learners)
    dated = latest(entries, [min(e.answered, now) for e in entries])
    out = sorted((at + span, track.weight(e)) for e, at in zip(entries, dated))
    near = ticket.near[0]  # ours from it on may have come after the ticket: not in its count
    skip = sum(track.weight(e) for e in entries if e is ticket or e.seq < near) - counted
    steps: list[list[float]] = []
    for at, units in out:
        cut = min(skip, units) if skip > 0 else 0
        skip, units = skip - cut, units - cut
        if not units or at >= until:
            continue
        if steps and steps[-1][0] == at:
            steps[-1][1] += units
        else:
            steps.append([at, units])
    return steps


def room(cap: list[Any], now: float) -> float:
    """What ``cap`` (``Window.caps``: ``[remaining, until, ...]``, then its :class:`Stairs`)
    leaves now, the steps come due by now added to its ``remaining``."""
    steps = cap[5].steps if len(cap) > 5 else None
    while steps and steps[0][0] <= now:
        cap[0] += steps.pop(0)[1]
    return cap[0]


def sooner(cap: list[Any], now: float, need: int) -> float:
    """When ``cap`` leaves ``need`` units (at most its ``until``), its steps counted."""
    left = room(cap, now)
    for at, units in cap[5].steps if len(cap) > 5 else ():
        if at >= cap[1]:
            break
        left += units
        if left >= need:
            return at
    return cap[1]


def full(window: Any, cap: list[Any], track: Any, ticket: Any) -> int:
    """Units the server counted before ``ticket`` at least, by ``cap`` (its word, room given back as
    ours left its count: :class:`Stairs`) leaving no room after it, when it was the last of ours
    admitted on that room, or sent with the last (not a probe beyond it), and refused: the limit
    the cap counted to less the ticket (the server admits one fewer than it says: LiteLLM's proxy's
    ``rpm - 1``). Else 0. Read from our log instead, a proxy that took a burst late and was let go
    of it was seen 31 of 60 full, and its 429 taught nothing: a second one came in the next minute.
    Ours admitted with it may have reached it first, and a 429 of any of them only says that many
    fewer: learned from each, 3 refused together taught 59, 58, 57. Ours sent with it (within
    ``spread``), unanswered or admitted, are no such sign: a count that refused it either had them
    (admitted: they came first) or refuses them too (a shuffled wave's refused one among 4 at :118
    taught nothing, a second 429 in the next minute). Two of them refused still teach one fewer
    each (the second's place is not known yet)."""
    if len(cap) <= 5 or ticket.seq < cap[2] or ticket is window.shape.probe:
        return 0
    burst = ticket.time + window.readings.spread  # ours sent with it: on the same room
    for entry in reversed(track.log.entries):  # the newest first
        if entry.seq <= ticket.seq:
            break
        if entry.live and not entry.refused and entry.time > burst:
            return 0
    return cap[5].limit - track.weight(ticket)


def first(track: Any, boundary: float, now: float) -> bool:
    """True when a count started afresh at ``boundary`` (:func:`restarted`), read at ``now``,
    shows ``remaining`` counts answers, not the admissions it limits, so it caps nothing
    (``Shape.by_answer``): read with the first of ours answered after the boundary, whose
    instant the minute's flip is (ours answered before it were counted before the boundary:
    :meth:`.fixed.FixedCount.flipped`). Kept as a cap, ours taken in the last minute and
    answered in this one (3 sent at :118 to a proxy's idle workers) held it 3 short. Read
    after others answered since showed nothing, the flip is late, ours it lets go may count
    in this minute (a burst sent at :57, taken until :73, the minute shown at :75): the count
    of answers, close to the takes, stays the cap (dropped, 25 429s)."""
    return not ours(track, lambda e: boundary <= e.answered < now)


def restarted(window: Any, track: Any, ticket: Any, remaining: int, server: int,
              boundary: float, now: float, margin: float) -> str | None:
    """Why ``remaining`` of ``server`` units in the answer to ``ticket``, sent before the
    candidate ``boundary`` and read at ``now`` after it, shows a count started afresh there by
    a server counting as it answers (None if not). Above what a bucket refilled since the last
    burst read (:mod:`.reading`: its bound as of its send time), what any window counting ours
    as they arrive could report: a fixed one from ``boundary`` less a window (ours sent since,
    the ticket with them; those within ``margin`` before it may have arrived after it), or a
    sliding one (a superset); and what a window sliding over answers could (ours answered
    within it, but for its first quarter: a loaded proxy writes answers seconds late); and
    no lower than a count of answers since ``boundary`` allows."""
    if not ticket.time < boundary <= now:
        return None
    window_s, tolerance = track.window, max(1, server // 20)
    group = window.readings.groups.get(False)  # the last burst read: [sent, left, ...]
    if group is None or remaining <= group[1] + (ticket.time + margin - group[0]) * server \
            / window_s + tolerance:
        return None  # a bucket refilled that much since (or nothing read before to tell)
    start, sent = boundary - window_s, ticket.time - margin
    arrived = ours(track, lambda e: e is ticket or start <= e.time < sent) \
        + theirs(window, track, lambda e: start <= e.time < sent)
    answered = ours(track, lambda e: e is ticket or now - window_s * 3 / 4 < e.answered <= now)
    since = ours(track, lambda e: e is ticket or boundary <= e.answered <= now)
    if remaining <= server - min(arrived, answered) + tolerance \
            or remaining < server - since - tolerance:
        return None
    return (f"{remaining} of {server} remaining in an answer to one of ours sent before the "
            f"clock minute, above what a window counting {min(arrived, answered)} of ours "
            "could report: counted as answered")
