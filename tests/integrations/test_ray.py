"""llmguard.integrations.ray on a local Ray (2 CPUs) with the local Redis and a loopback provider.

Real processes and real time (Ray actors, Redis's clock, an HTTP server), so looptime is off.
Assertions count rows, arrivals and windows, never wall-clock durations.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'llmguard[ray]')")
pytest.importorskip("ray.data")
aiohttp = pytest.importorskip("aiohttp")

import llmguard as lg  # noqa: E402
from llmguard.integrations.ray import (  # noqa: E402
    GuardedRows,
    Stack,
    guard_dataset,
    guard_rows,
    run_jsonl,
)
from llmguard.testing import FakeLLM, ProviderError, SimulatedProvider  # noqa: E402

pytestmark = pytest.mark.looptime(False)

ROOT = Path(__file__).resolve().parents[2]
QUOTA, WINDOW = 10, 1.0  #: the provider's quota: 10 requests per 1 s sliding window


class LoopbackProvider:
    """A ``SimulatedProvider`` behind an aiohttp server on 127.0.0.1, in a thread of this process,
    recording every arrival (time on its own clock, and the row it carried)."""

    def __init__(self, **options) -> None:
        self.sim = SimulatedProvider(**options)
        self.arrivals: list[tuple[float, str]] = []
        #: The row of every request answered (and so paid for).
        self.served: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self) -> str:
        from aiohttp import web

        async def completions(request: web.Request) -> web.Response:
            body = await request.json()
            self.arrivals.append((asyncio.get_running_loop().time(),
                                  body["messages"][-1]["content"]))
            try:
                answer = await self.sim.acompletion(**body)
                self.served.append(body["messages"][-1]["content"])
                return web.json_response(answer)
            except ProviderError as exc:
                return web.json_response({"error": {"message": str(exc)}},
                                         status=exc.status_code, headers=exc.headers)

        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", completions)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


class HTTPSend:
    """``send(**request)`` posting to an OpenAI-style endpoint; an error answer raises a
    ``ProviderError`` with its status and headers (what ``lg.classify`` reads)."""

    def __init__(self, url: str, *, crash_key: str | None = None, redis_url: str | None = None,
                 crash_at: str | None = None) -> None:
        self.url, self.crash_key, self.redis_url, self.crash_at = url, crash_key, redis_url, crash_at
        self.session = None

    async def __call__(self, **request):
        content = request["messages"][-1]["content"]
        if self.crash_at is not None and content == self.crash_at:
            import redis

            if redis.Redis.from_url(self.redis_url).set(self.crash_key, os.getpid(), nx=True):
                os._exit(1)  # the actor dies mid-batch, once: Ray restarts it and retries
        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.post(self.url, json=request) as r:
            body = await r.json()
            if r.status >= 400:
                raise ProviderError(body["error"]["message"], status_code=r.status,
                                    headers=dict(r.headers))
            return body


class BadRequest(Exception):
    """A 400 answer (picklable, unlike ProviderError, whose keyword-only __init__ Ray cannot
    rebuild when it ships the fake model to an actor)."""

    status_code = 400


def assert_quota_shared(provider: LoopbackProvider) -> None:
    """Every row was paid for once; a row sent again was only ever a refused one, and refusals
    are at most two. Not zero: the actors, Redis and this server share two loaded cores, and a
    send that reaches the server later than the 0.15 s margin can land in the window before
    (CI saw two). A quota that was not shared would see about two thirds of the rows refused."""
    refused = provider.sim.statistics().rate_limited
    assert len(provider.arrivals) == len(provider.served) + refused
    assert refused <= 2, refused


def shared_quota(backend):
    """Each actor's pipeline: retries outside one rate limit shared through Redis."""
    return (lg.Pipeline(name="ray-test").retry(attempts=3)
            .rate_limit(rps=QUOTA, backend=backend, margin=0.15))


def plain_pipeline(backend):
    return lg.Pipeline(name="ray-test").retry(attempts=2)


def rows(n: int) -> list[dict]:
    return [{"custom_id": f"r{i}", "model": "sim", "metadata": {"i": i},
             "messages": [{"role": "user", "content": f"row {i}"}]} for i in range(n)]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (2 CPUs), rows kept in order; shut down at the end."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture
def provider():
    server = LoopbackProvider(capacity=64, latency=0.02, rpm=QUOTA, window=WINDOW)
    yield server
    server.close()


def test_actors_share_one_quota_and_every_row_comes_back_once_in_order(
        local_ray, provider, redis_url, redis_prefix):
    """Three actors with one Redis-backed rate limit: 40 rows, each paid for once, the quota
    shared (a row sent again only after a refusal, refusals at most two), and the output has
    every row once, in input order, as llmguard run records."""
    out = guard_dataset(ray.data.from_items(rows(40), override_num_blocks=8), concurrency=3,
                        batch_size=5, num_cpus=0.5, pipeline=shared_quota,
                        send=HTTPSend(provider.url), redis_url=redis_url, prefix=redis_prefix)
    result = out.take_all()
    assert [r["id"] for r in result] == [f"r{i}" for i in range(40)]
    assert all(r["ok"] for r in result), [r["record"] for r in result if not r["ok"]][:2]
    record = json.loads(result[7]["record"])
    assert record["response"]["object"] == "chat.completion" and record["metadata"] == {"i": 7}
    assert set(record) == {"id", "line", "ok", "model", "deployment", "response", "error",
                           "usage", "cost", "latency", "elapsed", "attempts", "retries",
                           "fallback", "cached", "metadata"}
    assert Counter(provider.served) == {f"row {i}": 1 for i in range(40)}
    assert_quota_shared(provider)


def test_a_killed_actor_is_retried_without_paying_twice_for_answered_rows(
        local_ray, provider, redis_url, redis_prefix):
    """An actor dies (os._exit) before sending row 13, the fourth row of its batch; Ray restarts
    it and runs the batch again. Rows 10-12 were answered and remembered in Redis, so they are
    not sent again: every row is answered (paid for) by the provider exactly once, and comes back
    once, in order."""
    import redis

    crash_key = f"{redis_prefix}:crashed"
    send = HTTPSend(provider.url, crash_key=crash_key, redis_url=redis_url, crash_at="row 13")
    out = guard_dataset(ray.data.from_items(rows(30), override_num_blocks=3), concurrency=2,
                        batch_size=10, num_cpus=0.5, pipeline=shared_quota, send=send,
                        redis_url=redis_url, prefix=redis_prefix, remember="kill-test",
                        row_concurrency=1)
    result = out.take_all()
    assert redis.Redis.from_url(redis_url).get(crash_key) is not None  # it did crash
    assert [r["id"] for r in result] == [f"r{i}" for i in range(30)]
    assert all(r["ok"] for r in result)
    assert Counter(provider.served) == {f"row {i}": 1 for i in range(30)}
    assert_quota_shared(provider)


def test_errors_are_records_unless_asked_to_raise(local_ray):
    """A failing call and an invalid row become error records (the task succeeds); with
    on_error="raise" the Ray task fails with RowFailed naming the row."""
    data = rows(3) + [{"custom_id": "empty", "messages": []}]
    fake = FakeLLM([BadRequest("bad request")])
    result = guard_dataset(ray.data.from_items(data, override_num_blocks=1), concurrency=1,
                           batch_size=10, send=fake.acompletion, row_concurrency=1).take_all()
    assert [(r["id"], r["ok"], r["error_kind"]) for r in result] == [
        ("r0", False, "bad_request"), ("r1", True, None), ("r2", True, None),
        ("empty", False, "invalid_input")]
    failing = guard_dataset(ray.data.from_items(data, override_num_blocks=1), concurrency=1,
                            batch_size=10, send=FakeLLM().acompletion, on_error="raise",
                            ray_remote_args={"max_task_retries": 0})
    with pytest.raises(Exception, match="RowFailed|rows failed") as info:
        failing.take_all()
    assert "empty" in str(info.value)


def test_guard_rows_in_plain_ray_tasks(local_ray):
    """guard_rows runs in Ray tasks and returns one record per row, in order; the guard is
    built once per worker process and reused by the next task."""
    fake = FakeLLM(latency=0.001)

    @ray.remote(num_cpus=0.5)
    def task(chunk):
        records = guard_rows(chunk, pipeline=plain_pipeline, send=fake.acompletion)
        from llmguard.integrations._ray import actor

        return records, len(actor._GUARDS)

    chunks = [rows(10)[i:i + 5] for i in (0, 5)]
    results = ray.get([task.remote(c) for c in chunks])
    ids = [r["id"] for records, _ in results for r in records]
    assert ids == [f"r{i}" for i in range(10)]
    assert all(r["ok"] and r["response"]["choices"][0]["message"]["content"] == f"echo: row {i}"
               for i, r in enumerate(r for records, _ in results for r in records))
    assert all(count == 1 for _, count in results)


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_jsonl_resumes_in_the_cli_format(local_ray, tmp_path, redis_url, redis_prefix):
    """run_jsonl writes llmguard run's records in input order (ids custom_id or line-<n>, bad
    lines as error records); after a kill left a torn last line, resume does only the missing
    lines and the file ends complete and in order."""
    lines = [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(12)]
    lines[2] = {"custom_id": "req-2", "body": {"messages": [{"role": "user", "content": "b"}]}}
    lines[5] = "{not json"
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    fake = FakeLLM(latency=0.001)
    options = dict(actors=2, send=fake.acompletion, default_model="fake", batch_size=4,
                   redis_url=redis_url, prefix=redis_prefix, quiet=True)
    summary = run_jsonl(src, out, **options)
    assert (summary.lines, summary.ok, summary.failed, summary.exit_code) == (12, 11, 1, 1)
    first = read_records(out)
    assert [r["line"] for r in first] == list(range(1, 13))
    assert first[2]["id"] == "req-2" and first[0]["id"] == "line-1"
    assert first[5]["error"]["kind"] == "invalid_input" and "line 6" in first[5]["error"]["message"]
    assert first[0]["response"]["choices"][0]["message"]["content"] == "echo: q0"

    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:4]) + text[4][:20])  # 4 records, then one torn by a kill
    summary = run_jsonl(src, out, resume=True, **options)
    assert (summary.skipped, summary.lines) == (4, 8)
    again = read_records(out)
    assert [r["line"] for r in again] == list(range(1, 13))
    assert [r["id"] for r in again] == [r["id"] for r in first]

    with pytest.raises(ValueError, match="exists: pass resume=True"):
        run_jsonl(src, out, **options)


def test_bad_options_name_the_argument(tmp_path):
    """Bad options fail at once, before any actor starts, naming what is wrong."""
    send = FakeLLM().acompletion
    with pytest.raises(TypeError, match="exactly one of send="):
        GuardedRows(plain_pipeline)
    with pytest.raises(TypeError, match="pipeline must be a function"):
        GuardedRows(lg.Pipeline().retry(), send=send)
    with pytest.raises(TypeError, match="send must be an async callable"):
        GuardedRows(send=print)
    with pytest.raises(ValueError, match="redis_url must be a Redis URL"):
        GuardedRows(send=send, redis_url="localhost:6379")
    with pytest.raises(ValueError, match="redis_url must be a Redis URL") as refused:
        GuardedRows(send=send, redis_url="default:s3cret@localhost:6379")  # (no scheme)
    assert "s3cret" not in str(refused.value)  # (it was shown)
    with pytest.raises(ValueError, match="remember=.*redis_url"):
        GuardedRows(send=send, remember="job")
    with pytest.raises(ValueError, match="on_error must be"):
        GuardedRows(send=send, on_error="ignore")
    with pytest.raises(ValueError, match="row_concurrency must be"):
        GuardedRows(send=send, row_concurrency=0)
    with pytest.raises(ValueError, match="concurrency .actors. must be"):
        guard_dataset(object(), send=send, concurrency=0)
    with pytest.raises(ValueError, match="rpm must be an integer"):
        Stack(rpm=-5)
    with pytest.raises(ValueError, match="input_path .* does not exist"):
        run_jsonl(tmp_path / "missing.jsonl", tmp_path / "out.jsonl", send=send)
    with pytest.raises(ValueError, match="actors must be"):
        write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
        run_jsonl(tmp_path / "in.jsonl", tmp_path / "out.jsonl", send=send, actors=0)


def test_cli_run_on_ray(local_ray, tmp_path, capsys):
    """`llmguard run --ray` runs the file on Ray (here the module's local one) with the built-in
    fake model and writes the same records as `llmguard run`; --redis without --ray and options
    Ray cannot honour are usage errors (exit 2)."""
    from llmguard.cli import main

    src = write_jsonl(tmp_path / "in.jsonl",
                      [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(6)])
    out = tmp_path / "out.jsonl"
    assert main(["run", str(src), "-o", str(out), "--redis", "redis://h"]) == 2
    assert "--redis and --actors go with --ray" in capsys.readouterr().err
    assert main(["run", str(src), "-o", str(out), "--ray", "--metrics-port", "9"]) == 2
    assert "--metrics-port is not supported with --ray" in capsys.readouterr().err
    assert main(["run", str(src), "-o", str(out), "--ray", "--actors", "2", "--rpm", "600"]) == 0
    assert "6 done: 6 ok, 0 failed" in capsys.readouterr().out
    records = read_records(out)
    assert [r["line"] for r in records] == list(range(1, 7))
    assert records[0]["model"] == "fake"
    assert records[0]["response"]["choices"][0]["message"]["content"] == "echo: q0"


async def test_guard_rows_reuses_its_guard_when_the_send_objects_state_changes() -> None:
    """guard_rows matches a ``send`` by where it is defined, not by its object's state: a
    FakeLLM that recorded a call between two tasks in one worker is still the same guard."""
    from llmguard.integrations._ray.actor import _options_key

    fake = FakeLLM()
    before = _options_key({"send": fake.acompletion, "pipeline": plain_pipeline, "model": "m"})
    await fake.acompletion(model="m", messages=[{"role": "user", "content": "hi"}])
    assert fake.calls
    assert _options_key({"send": fake.acompletion, "pipeline": plain_pipeline, "model": "m"}) == before
    assert _options_key({"send": fake.acompletion, "pipeline": plain_pipeline, "model": "n"}) != before


def test_cli_run_on_ray_sends_the_key_of_api_key_and_api_key_env(local_ray, tmp_path, capsys,
                                                                  monkeypatch):
    """`llmguard run --ray --api-base` authenticates as the local run does: --api-key, else
    the driver's --api-key-env variable (set after Ray started, so only the driver has it);
    the key is never printed or written to the records."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from llmguard._cli.ray_launch import Secret
    from llmguard.cli import main

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(self.headers.get("Authorization", ""))
            data = json.dumps({"id": "c", "object": "chat.completion", "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                   "role": "assistant", "content": "ok"}}],
                               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    src = write_jsonl(tmp_path / "in.jsonl",
                      [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(4)])
    monkeypatch.setenv("LG_RAY_TEST_KEY", "sk-from-env-4242")
    try:
        common = ["run", str(src), "--ray", "--actors", "2", "--model", "m", "--api-base", base]
        assert main([*common, "-o", str(tmp_path / "a.jsonl"),
                     "--api-key-env", "LG_RAY_TEST_KEY"]) == 0
        assert seen == ["Bearer sk-from-env-4242"] * 4
        seen.clear()
        assert main([*common, "-o", str(tmp_path / "b.jsonl"), "--api-key", "sk-cli-1717"]) == 0
        assert seen == ["Bearer sk-cli-1717"] * 4
    finally:
        server.shutdown()
    printed = capsys.readouterr()
    written = (tmp_path / "a.jsonl").read_text() + (tmp_path / "b.jsonl").read_text()
    for secret in ("sk-from-env-4242", "sk-cli-1717"):
        assert secret not in printed.out + printed.err + written
    assert repr(Secret("sk-x")) == "Secret('***')"  # what Ray shows of the factory's arguments


def test_identical_rows_without_custom_id_are_each_answered(redis_url, redis_prefix):
    """#35 item 7: four identical rows without ``custom_id`` or ``line`` (four samples of one
    prompt) get four distinct ids, so the answered-rows store keeps four records and the
    provider is asked four times (before: one id, 1 of 4 sent, the other 3 got its record).
    Ids stay the same when the same batch runs again (a retried Ray task pays nothing twice)."""
    fake = FakeLLM()
    same = {"model": "m", "messages": [{"role": "user", "content": "a haiku"}]}
    batch = [dict(same) for _ in range(4)] + [{"model": "m", "messages": [
        {"role": "user", "content": "other"}]}]
    options = dict(send=fake.acompletion, redis_url=redis_url, prefix=redis_prefix,
                   remember="samples", row_concurrency=1)
    records = guard_rows(batch, **options)
    assert len({r["id"] for r in records}) == 5 and all(r["ok"] for r in records)
    assert fake.call_count == 5
    again = guard_rows(batch, **options)  # Ray runs the batch again: answered rows are kept
    assert [r["id"] for r in again] == [r["id"] for r in records] and fake.call_count == 5
    guard_rows(batch[::-1], **options)  # another batch: its rows are its own
    assert fake.call_count == 10


def test_a_row_remembered_by_an_older_llmguard_is_returned_whole(redis_url, redis_prefix):
    """A record kept in Redis by an earlier llmguard (one without the ``deployment`` field,
    added with the Router) is returned for its row as kept, and makes a table, its
    deployment column None (it raised KeyError: 'deployment' there)."""
    from llmguard.backends.redis import RedisBackend, RedisStore

    fake = FakeLLM()
    options = dict(send=fake.acompletion, redis_url=redis_url, prefix=redis_prefix,
                   remember="older")
    row = {"custom_id": "q1", "model": "m", "messages": [{"role": "user", "content": "hi"}]}
    (fresh,) = guard_rows([row], **options)
    old = {k: v for k, v in fresh.items() if k != "deployment"}

    async def keep() -> None:
        backend = RedisBackend(redis_url, prefix=redis_prefix)
        await RedisStore(backend, namespace="ray-done:older").set("q1", old, 60)
        await backend.aclose()

    asyncio.run(keep())
    guard = GuardedRows(**options)
    try:
        table = guard([row])
    finally:
        guard.close()
    assert table.column("deployment").to_pylist() == [None]
    assert json.loads(table.column("record")[0].as_py()) == old
    assert fake.call_count == 1  # remembered: not sent again


def test_cli_run_on_ray_routes_over_deployments_sharing_their_quotas_through_redis(
        local_ray, tmp_path, capsys, monkeypatch, redis_url) -> None:
    """`llmguard run --ray --redis` with two --api-base deployments (token buckets of 5 and 10
    requests per 2 s, each run's --rpm compressed 30x alike): 2 actors route 45 lines against
    the same per-deployment quotas in Redis, so a server refuses a request at most once; every line
    done, each record names the deployment that answered, the summary counts them."""
    from llmguard.cli import main
    from llmguard.testing import LoopbackServer, TokenBucketServer

    scale, quotas = 30, (5, 10)
    servers = [TokenBucketServer(rpm=q, window=60 / scale, latency=0.05) for q in quotas]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    https = [LoopbackServer(s) for s in servers]
    for http in https:
        asyncio.run_coroutine_threadsafe(http.__aenter__(), loop).result(60)
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 8} for i in range(45)])
    argv = ["run", str(src), "-o", str(tmp_path / "out.jsonl"), "--ray", "--actors", "2",
            "--redis", redis_url, "--model", "m", "--refill", "continuous",
            "--burst", str(1 / scale), "--margin", "0.1"]
    for i, (http, quota) in enumerate(zip(https, quotas)):
        monkeypatch.setenv(f"LG_RAY_DEPLOY_{i}", f"sk-ray-deploy-{i}")
        argv += ["--api-base", http.base_url, "--api-key-env", f"LG_RAY_DEPLOY_{i}",
                 "--rpm", str(quota * scale)]
    try:
        code = main(argv)
    finally:
        for http in https:
            asyncio.run_coroutine_threadsafe(http.__aexit__(None, None, None), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    records = read_records(tmp_path / "out.jsonl")
    assert len(records) == 45 and all(r["ok"] for r in records)
    names = [f"LG_RAY_DEPLOY_{i}@127.0.0.1:{http.port}" for i, http in enumerate(https)]
    for server, name in zip(servers, names):
        answered = sum(r["deployment"] == name for r in records)
        stats = server.statistics()
        assert stats.rate_limited <= 1 and stats.arrivals == answered + stats.rate_limited
        assert answered > 0, (name, stats)
        assert f"{name} {answered} answered" in printed.out
    assert "sk-ray-deploy" not in printed.out + printed.err
