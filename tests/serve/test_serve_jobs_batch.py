"""Batch jobs (``POST /v1/jobs?mode=batch``) against the simulated Batch API service over real
HTTP (the openai SDK inside the gateway): one record per line in input order, each line executed
once at the provider, progress from ``request_counts``, batch prices, the webhook, cancel,
``batch_fallback = "online"``, Anthropic's Message Batches, the Redis store, and a replica
taking a job over resuming the submitted batch instead of submitting it again."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from jobs_helpers import AUTH_A, SECRET, config, finished, requests, sse, wait_until
from serve_helpers import HANG_GUARD, served, write_config
from test_serve_jobs_webhooks import ALLOW, Receiver

from llmguard.testing import BatchAPIServer, BatchTimings

pytest.importorskip("openai")
pytestmark = pytest.mark.looptime(False)  # real sockets, two event loops: real time
FAST = BatchTimings(validating=0.01, per_request=0.001, finalizing=0.01)


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JOBS_TEST_SECRET", SECRET)


@contextmanager
def provider(**options: Any):
    server = BatchAPIServer(timings=options.pop("timings", FAST), **options)
    with server.in_thread():
        yield server


def batch_config(tmp_path, server: BatchAPIServer, extra: str = "", model: str = "") -> Any:
    text = config(extra=f"batch_poll = 0.02\n{extra}").replace(
        "[models.fake]\nlatency = 0.0\nseconds_per_token = 0.0",
        f'[models.fake]\nprovider = "openai"\nbase_url = "{server.base_url}"\nretries = 0\n'
        f"price_input = 2.0\nprice_output = 8.0\n{model}")
    return write_config(tmp_path, text)


def results(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in http.get(f"/v1/jobs/{job_id}/results").text.splitlines()]


def test_batch_job_answers_every_line_once_in_input_order(tmp_path) -> None:
    """Failed and expired lines go once more in a new batch; every line ends as one record, in
    input order, and no line is executed twice; progress moves with the batches' counts; each
    record costs its batch price (half the configured price); the webhook is delivered."""
    with provider(fail_rate=0.1, expire_rate=0.1, seed=3) as server, Receiver() as hook, \
            served(batch_config(tmp_path, server, ALLOW)) as gateway, \
            httpx.Client(base_url=gateway.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", params={"mode": "batch"},
                      json={"requests": requests(40), "callback_url": hook.url})
        assert r.status_code == 202, r.text
        assert r.json()["mode"] == "batch" and r.json()["batch"]["fallback"] == "batch"
        job_id = r.json()["id"]
        done = wait_until(http, job_id, lambda j: finished(j) and j["webhook"]["delivered"])
        events = sse(http, job_id)
        records = results(http, job_id)
    assert done["status"] == "completed" and done["counts"]["done"] == 40
    assert [x["line"] for x in records] == list(range(1, 41))
    assert max(server.executions.values()) == 1  # no line executed twice at the provider
    assert len(server.batches) == 2  # the lines' batch, then one for the failed and expired
    ok = [x for x in records if x["ok"]]
    assert len(ok) >= 36 and all(x["error"]["kind"] for x in records if not x["ok"])
    first = next(x for x in ok if x["line"] == 3)
    assert first["response"]["choices"][0]["message"]["content"] == "echo: line 2"
    assert first["cost"] == pytest.approx((8 * 2.0 + 4 * 8.0) / 2 / 1e6)  # batch price
    assert {x["attempts"] for x in records} == {1, 2}
    progress = [d["progress"] for _i, name, d in events if name == "progress"]
    assert progress == sorted(progress) and 0 < progress[-1]
    assert any(d["counts"]["done"] == 0 and d["progress"] > 0 for _i, _n, d in events)
    assert [(ok, body["status"]) for ok, body in hook.received] == [(True, "completed")]


def test_cancel_cancels_the_batches_and_keeps_what_they_finished(tmp_path) -> None:
    # 20 s a batch: the cancel lands before its end however loaded the machine (at 2 s it may not)
    slow = BatchTimings(validating=0.01, per_request=0.5, finalizing=0.01)
    with provider(timings=slow) as server, \
            served(batch_config(tmp_path, server)) as gateway, \
            httpx.Client(base_url=gateway.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", json={"requests": requests(40), "mode": "batch"})
        job_id = r.json()["id"]
        wait_until(http, job_id, lambda j: j["batch"]["provider_finished"] >= 3)
        assert http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        give_up = time.monotonic() + HANG_GUARD
        while len(records := results(http, job_id)) < 40:  # collected once the batch ends
            assert time.monotonic() < give_up, records
            time.sleep(0.05)
        statuses = [b.status for b in server.batches.values()]
    assert statuses == ["cancelled"]
    answered = [x for x in records if x["ok"]]
    assert 3 <= len(answered) < 40
    assert {x["error"]["kind"] for x in records if not x["ok"]} == {"cancelled"}
    assert sum(server.executions.values()) == len(answered)


def test_batch_fallback_online_sends_failed_lines_through_the_normal_stack(tmp_path) -> None:
    with provider(expire_rate=0.2, seed=1) as server, \
            served(batch_config(tmp_path, server)) as gateway, \
            httpx.Client(base_url=gateway.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", params={"mode": "batch", "batch_fallback": "online"},
                      json={"requests": requests(30)})
        done = wait_until(http, r.json()["id"], finished)
        records = results(http, done["id"])
    expired = 30 - sum(server.executions.values()) + server.online
    assert server.online >= 1 and len(server.batches) == 1 and expired >= 1
    assert done["counts"]["succeeded"] == 30 and [x["line"] for x in records] == list(range(1, 31))


def test_anthropic_message_batches(tmp_path) -> None:
    pytest.importorskip("anthropic")
    with provider() as server, \
            served(batch_config(tmp_path, server, model='batch_api = "anthropic"')) as gateway, \
            httpx.Client(base_url=gateway.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", params={"mode": "batch"}, json={"requests": requests(5)})
        done = wait_until(http, r.json()["id"], finished)
        records = results(http, done["id"])
    assert done["counts"]["succeeded"] == 5
    assert [x["line"] for x in records] == [1, 2, 3, 4, 5]
    assert records[1]["response"]["content"][0]["text"] == "echo: line 1"
    assert sorted(server.prompts.values()) == [1] * 5


def test_batch_mode_refused_early(tmp_path) -> None:
    """Bad ``mode`` or ``batch_fallback``, or a model with no batch API: 400 naming it."""
    with served(write_config(tmp_path, config())) as gateway, \
            httpx.Client(base_url=gateway.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        r = http.post("/v1/jobs", params={"mode": "fast"}, json={"requests": requests(1)})
        assert r.status_code == 400 and r.json()["error"]["param"] == "mode"
        r = http.post("/v1/jobs", json={"requests": requests(1), "batch_fallback": "online"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "batch_fallback"
        r = http.post("/v1/jobs", json={"requests": requests(1), "mode": "batch"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "batch_unavailable"
        assert "fake" in r.json()["error"]["message"]


def test_redis_store_and_a_takeover_resume_the_submitted_batch(tmp_path, redis_url,
                                                               redis_prefix) -> None:
    """With ``--redis`` the ledger lives in the job store: a replica stopped while the batch
    runs leaves its task pending, and the next replica claims it, finds the batch in the
    ledger and polls it; no batch is created twice, no line executed twice."""
    slow = BatchTimings(validating=0.01, per_request=0.05, finalizing=0.01)
    with provider(timings=slow) as server:
        path = batch_config(tmp_path, server, "reclaim_after = 0.5")
        options = {"redis_url": redis_url, "redis_prefix": redis_prefix}
        with served(path, **options) as first, \
                httpx.Client(base_url=first.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            job_id = http.post("/v1/jobs", params={"mode": "batch"},
                               json={"requests": requests(40)}).json()["id"]
            running = wait_until(http, job_id, lambda j: j["batch"]["provider_finished"] >= 2)
        assert running["status"] == "running"
        with served(path, **options) as second, \
                httpx.Client(base_url=second.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            done = wait_until(http, job_id, finished)
            records = results(http, job_id)
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 40
    assert [x["line"] for x in records] == list(range(1, 41))
    assert len(server.batches) == 1 and max(server.executions.values()) == 1


def test_the_models_enqueued_token_limit_queues_batches_instead_of_failing(tmp_path) -> None:
    """``batch_enqueued_tokens`` (the provider's enqueued-token limit for the model, as
    ``llmguard run --enqueued-tokens``): the job's lines go in several batches, each submitted
    once the one before has ended, and the provider fails none for the limit."""
    lines = [{**r, "max_tokens": 16} for r in requests(40)]
    with provider(enqueued_token_limit=300) as server, served(batch_config(
            tmp_path, server, model="batch_enqueued_tokens = 300")) as gateway, \
            httpx.Client(base_url=gateway.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
        job_id = http.post("/v1/jobs", params={"mode": "batch"},
                           json={"requests": lines}).json()["id"]
        done = wait_until(http, job_id, finished)
    statuses = [b.status for b in server.batches.values()]
    assert done["counts"]["succeeded"] == 40
    assert len(statuses) > 1 and set(statuses) == {"completed"}
    assert max(server.executions.values()) == 1


def test_tenant_budget_reserves_each_batch_at_the_batch_price(tmp_path) -> None:
    """The tenant's budget reserves each batch's bound at the batch price before it is
    submitted (a job that fits only at that price is not refused) and settles to the records'
    batch price (what /v1/usage reports spent); a line that could pass the cap is not sent,
    recorded as ``not_sent`` (BudgetExceeded), while the lines before it are answered."""
    with provider() as server:
        path = batch_config(tmp_path, server)
        path.write_text(path.read_text().replace(
            'webhook_secret_env = "JOBS_TEST_SECRET"',
            'webhook_secret_env = "JOBS_TEST_SECRET"\nmax_budget = 1.0', 1))
        with served(path) as gateway, \
                httpx.Client(base_url=gateway.url, headers=AUTH_A, timeout=HANG_GUARD) as http:
            # 40 lines x 4,096 output tokens (no max_tokens): $0.66 at the batch price of
            # $4/M fits the $1 cap ($1.31 at the online price would not)
            first = http.post("/v1/jobs", params={"mode": "batch"},
                              json={"requests": requests(40)}).json()["id"]
            done = wait_until(http, first, finished)
            spent = sum(x["cost"] for x in results(http, first))
            usage = http.get("/v1/usage").json()
            # two lines, then one whose max_tokens alone may cost $4 at the batch price
            lines = [*requests(2), {"messages": [{"role": "user", "content": "long"}],
                                    "max_tokens": 1_000_000}]
            second = http.post("/v1/jobs", params={"mode": "batch"},
                               json={"requests": lines}).json()["id"]
            capped = wait_until(http, second, finished)
            records = results(http, second)
            after = http.get("/v1/usage").json()
    assert done["counts"]["succeeded"] == 40 and len(server.batches) == 2
    assert spent == pytest.approx(40 * (8 * 2.0 + 4 * 8.0) / 2 / 1e6)
    assert usage["budget"]["spent_usd"] == pytest.approx(spent)
    assert usage["budget"]["reserved_usd"] == 0
    assert capped["counts"]["succeeded"] == 2 and capped["counts"]["failed"] == 1
    assert [x["ok"] for x in records] == [True, True, False]
    assert records[2]["error"]["kind"] == "not_sent"
    assert records[2]["error"]["type"] == "BudgetExceeded"
    assert "max_budget" in records[2]["error"]["message"]
    assert after["budget"]["reserved_usd"] == 0
    assert max(server.executions.values()) == 1
