"""`llmguard run` on a full disk: a clear usage/IO error (exit 2), no traceback, nothing lost
that was already on disk, and a resume once there is room completes the file.

The disk is a real tmpfs of a few dozen KiB, mounted in a private user and mount namespace
(``unshare --user --map-root-user --mount``): no privilege needed, nothing to clean up (the
mount ends with the namespace), and the writes fail with the real ``ENOSPC``. Where user
namespaces are not available, the write case falls back to ``RLIMIT_FSIZE`` in the child (the
same failing write, as ``EFBIG``); the sort case needs a shared free-space total and is skipped.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD = 300  #: a safety net against a hung child, never an assertion about speed


def _userns() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=16k tmpfs $d"],
                           capture_output=True)
    return probe.returncode == 0


USERNS = _userns()


def _lines(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content":
                                                      f"question {i} " + "x" * 100}]}) + "\n"
                            for i in range(n)))
    return path


def _cli(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "llmguard", "run", *args, "--no-progress"])


def _on_small_disk(tmp_path: Path, size_kib: int, steps: list[list[str]]) -> list[dict]:
    """Run each step (``llmguard run`` arguments, OUTPUT as ``disk/out.jsonl``) on a tmpfs of
    ``size_kib`` mounted at ``tmp_path/disk``; copy the output to ``tmp_path/after.jsonl``."""
    script = [f"mount -t tmpfs -o size={size_kib}k tmpfs disk"]
    for i, step in enumerate(steps):
        script.append(f"{_cli(*step)} > out{i} 2> err{i}; echo $? > rc{i}")
    script.append("cp disk/out.jsonl after.jsonl; ls disk > listing")
    (tmp_path / "disk").mkdir()
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                    "\n".join(script)], cwd=tmp_path, timeout=HANG_GUARD, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return [{"rc": int((tmp_path / f"rc{i}").read_text()),
             "out": (tmp_path / f"out{i}").read_text(),
             "err": (tmp_path / f"err{i}").read_text()} for i in range(len(steps))]


def _records(path: Path) -> list[dict]:
    """Whole records only (a full disk may leave the last line torn; resume repairs it)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _resume(tmp_path: Path, src: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shlex.split(_cli(str(src), "-o", str(output), "--resume")),
                          cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _assert_clear_usage_error(step: dict) -> None:
    assert step["rc"] == 2, step
    assert "Traceback" not in step["err"] and "crashed" not in step["err"], step["err"]
    assert "Exception ignored" not in step["err"], step["err"]


def test_full_disk_mid_run_is_a_usage_error_and_loses_nothing_on_disk(tmp_path: Path) -> None:
    """A resumed run that fills the disk stops sending, exits 2 saying the output cannot be
    written and how to resume, with no traceback; the earlier run's records are intact, and a
    resume with room completes every line exactly once, in input order."""
    src, first = _lines(tmp_path / "in.jsonl", 400), _lines(tmp_path / "first.jsonl", 50)
    if USERNS:
        one, two = _on_small_disk(tmp_path, 64, [[str(first), "-o", "disk/out.jsonl"],
                                                 [str(src), "-o", "disk/out.jsonl", "--resume"]])
        assert one["rc"] == 0, one["err"]
        after = tmp_path / "after.jsonl"
        reason = "No space left on device"
    else:  # no user namespaces: the file may not grow past 64 KiB (EFBIG, same write path)
        after = tmp_path / "after.jsonl"
        assert subprocess.run(shlex.split(_cli(str(first), "-o", str(after))), cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              timeout=HANG_GUARD).returncode == 0

        def small_files() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

        proc = subprocess.run(shlex.split(_cli(str(src), "-o", str(after), "--resume")),
                              cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD,
                              preexec_fn=small_files, env={**os.environ, "PYTHONPATH": str(ROOT)})
        two = {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}
        reason = "File too large"
    _assert_clear_usage_error(two)
    assert "cannot write output" in two["err"] and reason in two["err"], two["err"]
    assert "Ctrl-C again" not in two["err"], two["err"]  # no signal: the disk stopped the run
    assert "free space or fix permissions, then resume with" in two["err"]
    kept = _records(after)
    assert [r["line"] for r in kept[:50]] == list(range(1, 51))  # the first run's, untouched
    assert 50 < len(kept) < 400 and all(r["ok"] for r in kept)
    again = _resume(tmp_path, src, after)
    assert again.returncode == 0, again.stderr
    assert [r["line"] for r in _records(after)] == list(range(1, 401))


@pytest.mark.skipif(not USERNS, reason="needs a tmpfs in a user namespace (unshare)")
def test_no_room_to_sort_keeps_every_record_and_says_so(tmp_path: Path) -> None:
    """When every record fits but the sorted copy does not, the output keeps every record
    (unsorted), the partial copy is removed, and the run exits 2 saying how to sort it."""
    src, first = _lines(tmp_path / "in.jsonl", 400), _lines(tmp_path / "first.jsonl", 50)
    one, two = _on_small_disk(tmp_path, 400, [[str(first), "-o", "disk/out.jsonl"],
                                              [str(src), "-o", "disk/out.jsonl", "--resume"]])
    assert one["rc"] == 0, one["err"]
    _assert_clear_usage_error(two)
    assert "every line is recorded in disk/out.jsonl, but it could not be put back in input " \
           "order" in two["err"], two["err"]
    assert (tmp_path / "listing").read_text().split() == ["out.jsonl"]  # no partial copy left
    after = tmp_path / "after.jsonl"
    assert sorted(r["line"] for r in _records(after)) == list(range(1, 401))
    again = _resume(tmp_path, src, after)  # with room: sorts, sends nothing
    assert again.returncode == 0 and "0 done" in again.stdout, again.stdout + again.stderr
    assert [r["line"] for r in _records(after)] == list(range(1, 401))
