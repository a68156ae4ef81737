"""The job state both JobManager and the gateway's jobs use: transitions, counts, round trip."""

from __future__ import annotations

import llmguard as lg
from llmguard._runners.jobstate import TERMINAL, JobStatus, Progress, can_move, wire_status


def test_one_status_enum_for_both() -> None:
    assert lg.JobStatus is JobStatus
    assert wire_status(JobStatus.PENDING) == "queued"
    assert wire_status(JobStatus.CANCELLED) == "cancelled"


def test_transitions_end_once() -> None:
    assert can_move(JobStatus.PENDING, JobStatus.RUNNING)
    assert can_move(JobStatus.RUNNING, JobStatus.CANCELLED)
    for end in TERMINAL:
        assert not any(can_move(end, other) for other in JobStatus)
    assert not can_move(JobStatus.RUNNING, JobStatus.PENDING)


def test_progress_counts_and_completes_on_the_last_item() -> None:
    p = Progress(total=2, created=1.0)
    assert p.move(JobStatus.RUNNING, 2.0) and p.started == 2.0
    assert not p.count(True, 3.0)
    assert p.count(False, 4.0) and p.status is JobStatus.COMPLETED and p.finished == 4.0
    assert (p.done, p.ok, p.failed) == (2, 1, 1)
    assert not p.move(JobStatus.CANCELLED, 5.0)  # a finished job never moves again


def test_items_after_a_cancel_are_counted_but_change_nothing() -> None:
    p = Progress(total=3)
    p.move(JobStatus.CANCELLED, 1.0)
    for _ in range(3):
        assert not p.count(True, 2.0)
    assert p.status is JobStatus.CANCELLED and p.finished == 1.0 and p.done == 3


def test_fields_round_trip() -> None:
    p = Progress(total=5, done=2, ok=1, failed=1, created=10.5, started=11.25)
    p.status = JobStatus.RUNNING
    assert Progress.from_fields(p.to_fields()) == p
    view = p.to_dict()
    assert view["status"] == "running" and view["progress"] == 0.4
    assert view["counts"] == {"total": 5, "done": 2, "succeeded": 1, "failed": 1, "pending": 3}
