"""The shared runner parts (issue 17/21): one JSONL resume reader, one reorder buffer, one
signal-and-grace stopper, redaction of persisted failures, tqdm optional, no dead-letter dups."""

from __future__ import annotations

import asyncio
import builtins
import json

import pytest

import llmguard as lg
from llmguard._core.redact import REDACTED, redact, redact_url
from llmguard._runners.jsonl import read_records
from llmguard._runners.reorder import Reorder
from llmguard._runners.stopper import Stopper


def test_read_records_repairs_a_torn_tail_and_names_corrupt_lines(tmp_path) -> None:
    """An unterminated unparseable tail is cut off; a complete unterminated record gets its
    newline; an unreadable terminated line is an error naming the line."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"k": 1}\n\n{"k": 2}\n{"k": 3, "to')
    got = list(read_records(str(path), lambda r: r["k"], corrupt=lambda n, e: f"line {n}"))
    assert got == [(1, 1), (3, 2)] and path.read_bytes() == b'{"k": 1}\n\n{"k": 2}\n'
    path.write_bytes(b'{"k": 1}')
    assert [v for _, v in read_records(str(path), lambda r: r["k"], corrupt=str)] == [1]
    assert path.read_bytes() == b'{"k": 1}\n'
    path.write_bytes(b'{"k": 1}\nnope\n{"k": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(read_records(str(path), lambda r: r["k"], corrupt=lambda n, e: f"line {n}"))


def test_reorder_hands_out_in_tag_order_and_skips_gaps() -> None:
    """Items come out in tag order; at shutdown a missing tag can be skipped."""
    buf: Reorder[str] = Reorder()
    buf.put(1, "b")
    assert buf.pop() is None
    buf.put(0, "a")
    assert [buf.pop(), buf.pop(), buf.pop()] == ["a", "b", None]
    buf.put(5, "f")
    assert buf.skip_gap() and buf.pop() == "f" and not buf.skip_gap()


async def test_stopper_stops_then_abandons_after_grace_or_second_signal() -> None:
    """First signal: stop at once, abandon after grace; second signal: abandon at once."""
    events: list[str] = []
    stopper = Stopper(10, stop=events.append, abandon=lambda: events.append("abandon"))
    stopper("SIGTERM")
    assert events == ["SIGTERM"] and stopper.signal == "SIGTERM"
    await asyncio.sleep(11)  # virtual time
    assert events == ["SIGTERM", "abandon"]
    quick = Stopper(10, stop=events.append, abandon=lambda: events.append("now"))
    quick("SIGINT")
    quick("SIGINT")
    assert events[-1] == "now" and quick.abandoned


def test_redact_hides_credentials_but_keeps_counts() -> None:
    """Keys named like credentials lose their values; URL user-info and bearer/sk- keys in text
    are replaced; token counts are not secrets."""
    value = {"api_key": "sk-abcdefghijkl", "headers": {"Authorization": "Bearer xyz"},
             "max_tokens": 5, "url": "https://user:pw@host/v1", "note": "key sk-abcdefghijklmn",
             "messages": [{"role": "user", "content": "hi"}], "client_secret": "s"}
    out = redact(value)
    assert out["api_key"] == REDACTED and out["headers"]["Authorization"] == REDACTED
    assert out["client_secret"] == REDACTED and out["max_tokens"] == 5
    assert out["url"] == f"https://user:{REDACTED}@host/v1" and "sk-" not in out["note"]
    assert out["messages"] == value["messages"]
    assert redact_url("http://localhost:8000/v1") == "http://localhost:8000/v1"


async def test_dead_letter_has_no_credentials_and_no_duplicates_on_rerun(tmp_path) -> None:
    """A failed item is dead-lettered once with its credentials redacted, however often the
    batch is rerun with retry_failed=False."""
    path, dead = tmp_path / "run.jsonl", tmp_path / "dead.jsonl"
    item = {"prompt": "p", "api_key": "sk-secretsecret", "base": "https://u:pw@h/"}

    async def fail(x: dict) -> None:
        raise ValueError(f"bad key {x['api_key']}")

    await lg.batch(fail, [item], checkpoint=path, dead_letter=dead)
    for _ in range(3):
        await lg.batch(fail, [item], checkpoint=path, retry_failed=False, dead_letter=dead)
    lines = dead.read_text().splitlines()
    assert len(lines) == 1
    assert "secret" not in dead.read_text() and "pw@" not in dead.read_text()
    assert "secret" not in path.read_text()
    assert json.loads(lines[0])["item"]["prompt"] == "p"


async def test_batch_without_tqdm_runs_without_a_bar(monkeypatch) -> None:
    """progress=True without tqdm installed runs the batch (no ModuleNotFoundError)."""
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ModuleNotFoundError("No module named 'tqdm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)

    async def double(x: int) -> int:
        return 2 * x

    outcomes = await lg.batch(double, range(3), progress=True)
    assert [o.value for o in outcomes] == [0, 2, 4]
