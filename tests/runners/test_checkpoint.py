"""Checkpoint and resume: no item processed twice, failures retried or dead-lettered."""

from __future__ import annotations

import asyncio
import json

import pytest

import llmguard as lg


async def test_resume_after_interruption_runs_no_item_twice(tmp_path) -> None:
    """A run cancelled midway, then rerun with the same checkpoint, calls fn once per item and
    returns the full ordered result list (restored outcomes for items done before)."""
    path = tmp_path / "run.jsonl"
    calls: list[int] = []

    async def fn(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(1)
        return x * 10

    task = asyncio.ensure_future(lg.batch(fn, range(20), concurrency=3, checkpoint=path, grace=5))
    await asyncio.sleep(3.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first = list(calls)
    assert 0 < len(first) < 20
    outcomes = await lg.batch(fn, range(20), concurrency=3, checkpoint=path)
    assert sorted(calls) == list(range(20))  # every item exactly once over both runs
    assert [o.value for o in outcomes] == [x * 10 for x in range(20)]
    assert sum(1 for _ in open(path)) == 20


async def test_failed_items_are_retried_on_resume(tmp_path) -> None:
    """retry_failed=True (default): items that failed run again; successes are not repeated."""
    path = tmp_path / "run.jsonl"
    broken = True
    calls: list[int] = []

    async def fn(x: int) -> int:
        calls.append(x)
        if broken and x == 2:
            raise ValueError("flaky")
        return x

    first = await lg.batch(fn, range(4), checkpoint=path)
    assert not first[2].ok
    broken = False
    second = await lg.batch(fn, range(4), checkpoint=path)
    assert all(o.ok for o in second) and calls == [0, 1, 2, 3, 2]


async def test_failed_items_go_to_dead_letter_when_not_retried(tmp_path) -> None:
    """retry_failed=False: previous failures are not rerun, they are written to dead_letter with
    their item and error, and come back as PreviousFailure outcomes."""
    path, dead = tmp_path / "run.jsonl", tmp_path / "dead.jsonl"

    async def fn(x: int) -> int:
        if x == 1:
            raise ValueError("nope")
        return x

    await lg.batch(fn, range(3), checkpoint=path)
    calls: list[int] = []

    async def again(x: int) -> int:
        calls.append(x)
        return x

    outcomes = await lg.batch(again, range(3), checkpoint=path, retry_failed=False, dead_letter=dead)
    assert calls == [] and "nope" in str(outcomes[1].error)
    record = json.loads(dead.read_text().splitlines()[0])
    assert record["item"] == 1 and "ValueError: nope" in record["error"]


async def test_truncated_last_line_is_tolerated(tmp_path) -> None:
    """A crash mid-write leaves a partial last line: it is dropped (that item runs again) and the
    file stays well-formed for the next appends."""
    path = tmp_path / "run.jsonl"

    async def fn(x: int) -> int:
        return x

    await lg.batch(fn, range(3), checkpoint=path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    calls: list[int] = []

    async def counted(x: int) -> int:
        calls.append(x)
        return x

    await lg.batch(counted, range(3), checkpoint=path)
    assert calls == [2]
    assert all(json.loads(line) for line in path.read_text().splitlines())


async def test_corrupt_middle_line_names_file_and_line(tmp_path) -> None:
    """An unreadable line that is not the last one is an error naming the file and line."""
    path = tmp_path / "run.jsonl"
    path.write_text('{"key": "0:a", "ok": true}\nGARBAGE\n{"key": "1:b", "ok": true}\n')
    with pytest.raises(ValueError, match=r"run.jsonl:2: not a checkpoint record"):
        await lg.batch(asyncio.sleep, [1], checkpoint=path)


async def test_non_json_values_are_stored_as_repr(tmp_path) -> None:
    """A value JSON cannot encode is stored as its repr with a flag; resume returns that string."""
    path = tmp_path / "run.jsonl"

    async def fn(x: int) -> object:
        return {1, 2} if x else object

    await lg.batch(fn, [1], checkpoint=path)
    record = json.loads(path.read_text())
    assert record["repr"] is True and record["value"] == "{1, 2}"
    again = await lg.batch(fn, [1], checkpoint=path)
    assert again[0].value == "{1, 2}"


async def test_custom_key_identifies_items_across_reordered_input(tmp_path) -> None:
    """With key=, an item is recognised as done wherever it appears in the new input."""
    path = tmp_path / "run.jsonl"
    calls: list[str] = []

    async def fn(x: str) -> str:
        calls.append(x)
        return x.upper()

    await lg.batch(fn, ["a", "b"], checkpoint=path, key=str)
    outcomes = await lg.batch(fn, ["b", "c", "a"], checkpoint=path, key=str)
    assert calls == ["a", "b", "c"] and [o.value for o in outcomes] == ["B", "C", "A"]
