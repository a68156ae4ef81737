"""`llmguard run` over several deployments of one model: repeated ``--api-base`` pairs and
``--config`` files of ``[[deployments]]`` (the gateway's schema), routed by a Router, each
deployment never sent more than its quota.

The command runs in this process (``llmguard.cli.main``); the simulated servers run behind real
sockets on an event loop of their own thread. Time at the servers is compressed 30x as in
``test_cli_paced``: a server's per-minute quota is enforced over 2 s, and the run holds each
deployment's ``--rpm`` over a thirtieth of its minute (``--burst``). No wall-clock bound.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmguard.cli import main
from llmguard.testing import LoopbackServer, TokenBucketServer

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]
SCALE = 30  #: a server's minute is 2 s
HANG_GUARD = 120  #: a safety net for the servers' thread, never an assertion about speed


@contextmanager
def serving(*servers: Any) -> Iterator[list[LoopbackServer]]:
    """``servers`` behind loopback HTTP, on an event loop in a thread of their own (the
    command's ``asyncio.run`` has this one)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    https = [LoopbackServer(server) for server in servers]

    def on_loop(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(HANG_GUARD)

    try:
        for http in https:
            on_loop(http.__aenter__())
        yield https
    finally:
        for http in https:
            on_loop(http.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(HANG_GUARD)
        loop.close()


def lines(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}],
                                        "max_tokens": 8}) + "\n" for i in range(count)))
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_repeated_api_base_pairs_route_a_batch_over_three_deployments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Three token-bucket servers of 4, 8 and 16 requests per (compressed) minute, 84 lines (3x
    their sum): every line done once, at most one 429 per server (its own bucket is the quota;
    the run's margin is 0.1 s of a 2 s window, on a loaded machine), each record names the
    deployment that answered, the summary counts each one's answers, and no key is printed."""
    quotas = (4, 8, 16)
    servers = [TokenBucketServer(rpm=q, window=60 / SCALE, latency=0.05) for q in quotas]
    for i in range(3):
        monkeypatch.setenv(f"LG_DEPLOY_KEY_{i}", f"sk-deploy-{i}-secret")
    with serving(*servers) as https:
        argv = ["run", str(lines(tmp_path / "in.jsonl", 84)), "-o", str(tmp_path / "out.jsonl"),
                "--no-progress", "--model", "m", "--concurrency", "64", "--refill", "continuous",
                "--burst", str(1 / SCALE), "--margin", "0.1"]
        for i, (http, quota) in enumerate(zip(https, quotas)):
            argv += ["--api-base", http.base_url, "--api-key-env", f"LG_DEPLOY_KEY_{i}",
                     "--rpm", str(quota * SCALE)]
        code = main(argv)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    out = records(tmp_path / "out.jsonl")
    assert len(out) == 84 and all(r["ok"] for r in out)
    names = [f"LG_DEPLOY_KEY_{i}@127.0.0.1:{http.port}" for i, http in enumerate(https)]
    answered = {name: sum(r["deployment"] == name for r in out) for name in names}
    assert sum(answered.values()) == 84
    for server, name in zip(servers, names):
        stats = server.statistics()
        # A 429 at worst (real time on a loaded machine): the server refused it, never over.
        assert stats.rate_limited <= 1 and stats.arrivals == answered[name] + stats.rate_limited
        assert stats.cancelled_after_arrival == 0, (name, stats)
    row = re.search(r"deployments\s+(.*)", printed.out)
    assert row is not None
    for name in names:
        assert f"{name} {answered[name]} answered" in row.group(1)
    assert "sk-deploy-" not in printed.out + printed.err + (tmp_path / "out.jsonl").read_text()


README_CONFIG = re.search(r"```toml\n(# deployments\.toml.*?)```",
                          (ROOT / "README.md").read_text(), re.DOTALL)


def test_the_readme_config_file_routes_over_its_deployments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's ``llmguard run --config`` file, as pasted (offline fake deployments, one
    always answering 503): every line done, none by the failing deployment, the others' counts
    in the summary."""
    assert README_CONFIG is not None
    (tmp_path / "deployments.toml").write_text(README_CONFIG.group(1))
    code = main(["run", str(lines(tmp_path / "in.jsonl", 40)), "-o", str(tmp_path / "out.jsonl"),
                 "--no-progress", "--config", str(tmp_path / "deployments.toml")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    out = records(tmp_path / "out.jsonl")
    assert len(out) == 40 and all(r["ok"] for r in out)
    assert {r["deployment"] for r in out} <= {"eu", "us"}
    assert "deployments  eu " in printed.out and "down 0 answered" in printed.out


def test_config_errors_name_the_key_and_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --config file is checked by the gateway's parser: an unknown key names itself and its
    line, a table other than [[deployments]] is refused, two deployments may not share a
    name; each exits 2 before anything runs."""
    src = lines(tmp_path / "in.jsonl", 1)
    cases = [
        ('[[deployments]]\nname = "a"\nrmp = 5\n',
         ["deployments.0.rmp", "line 3", "did you mean 'rpm'"]),
        ('[server]\ngrace = 1\n', ["server", "[[deployments]] tables only"]),
        ('[[deployments]]\nname = "a"\n[[deployments]]\nname = "a"\n',
         ["deployments.1.name", "'a' is used twice"]),
        ('name = "a"\n', ["name", "unknown key"]),
    ]
    for text, needles in cases:
        (tmp_path / "d.toml").write_text(text)
        code = main(["run", str(src), "-o", str(tmp_path / "out.jsonl"),
                     "--config", str(tmp_path / "d.toml")])
        err = capsys.readouterr().err
        assert code == 2, err
        for needle in needles:
            assert needle in err, (needle, err)
        assert not (tmp_path / "out.jsonl").exists()
