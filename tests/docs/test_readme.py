"""Every python code block of README.md runs as pasted (#35 item 9).

Each block runs in a fresh process (``readme_world.py``: the documented fixture that supplies
what the reader brings, answered locally, no network and no key), in a scratch directory.
A block fails this test if it raises: a missing import, a name nothing defines, an API that
moved, a call the local provider refuses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORLD = Path(__file__).with_name("readme_world.py")
HANG_GUARD = 600  #: a safety net against a hung block (Ray starts slowly), not a speed bound


def blocks() -> list[tuple[int, str]]:
    """``(line, source)`` of every ```python block of the README."""
    text = (ROOT / "README.md").read_text()
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


BLOCKS = blocks()


def test_the_readme_has_python_blocks() -> None:
    """So the parametrised test cannot pass vacuously."""
    assert len(BLOCKS) >= 10


@pytest.mark.looptime(False)
@pytest.mark.parametrize(("line", "source"), BLOCKS, ids=[f"line-{line}" for line, _ in BLOCKS])
def test_readme_block_runs_as_pasted(line: int, source: str, tmp_path: Path) -> None:
    """The block at README line ``line`` exits 0 in the reader's world."""
    path = tmp_path / f"readme_line_{line}.py"
    path.write_text(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "OPENAI_API_KEY": ""}
    proc = subprocess.run([sys.executable, str(WORLD), str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, f"README line {line}:\n{source}\n{proc.stderr[-3000:]}"


def test_the_readme_webhook_check_accepts_what_the_gateway_signs() -> None:
    """The README's ``verify`` accepts a delivery signed by the gateway's own ``sign`` and
    refuses a tampered body, a wrong secret and an old timestamp."""
    import time

    from llmguard._serve.jobs.webhooks import sign

    (source,) = [source for _, source in BLOCKS if "def verify(" in source]
    names: dict = {}
    exec(compile(source, "README webhook block", "exec"), names)
    verify = names["verify"]
    body, now = b'{"id":"job_1","status":"completed"}', str(int(time.time()))
    assert verify("s3cret", body, now, sign("s3cret", now, body))
    assert not verify("s3cret", body + b" ", now, sign("s3cret", now, body))
    assert not verify("other", body, now, sign("s3cret", now, body))
    old = str(int(time.time()) - 3600)
    assert not verify("s3cret", body, old, sign("s3cret", old, body))
