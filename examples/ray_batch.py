"""A batch on Ray Data: two actors guard every row's call, sharing one quota through Redis.

Runs offline on a local Ray (``ray.init(num_cpus=2)``) with the fake model. With a Redis at
REDIS_URL (default redis://127.0.0.1:6379/0) the actors share one rate limit and one
concurrency limit, and keep answered rows there; without one each actor takes half of them.
Needs the ray extra (pip install 'llmguard[ray]'); without it, it says so and exits 0.
"""

import json
import os
import uuid

import llmguard as lg
from llmguard.testing import FakeLLM

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RPM, CONCURRENCY = 1200, 8


def make_pipeline(backend):
    """Runs once in each actor: ``backend`` is a RedisBackend on URL, or None without Redis."""
    if backend is None:  # no shared state: each of the 2 actors keeps within half the quota
        return (lg.Pipeline(name="chat").retry(attempts=3).timeout(30)
                .rate_limit(rpm=RPM // 2).concurrency_limit(CONCURRENCY // 2))
    from llmguard.backends.redis import RedisConcurrencyLimiter

    return (lg.Pipeline(name="chat").retry(attempts=3).timeout(30)
            .rate_limit(rpm=RPM, backend=backend)  # one quota for every actor, on any node
            .concurrency_limit(RedisConcurrencyLimiter(backend, CONCURRENCY, name="chat")))


def redis_answers() -> bool:
    try:
        import redis

        redis.Redis.from_url(URL, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
        return True
    except Exception:
        return False


def main() -> None:
    try:
        import ray
        import ray.data
    except ImportError:
        print("This example needs Ray: pip install 'llmguard[ray]'")
        return
    from llmguard.integrations.ray import guard_dataset

    shared = redis_answers()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="warning")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # records come back in input order
    context.enable_progress_bars = False

    rows = [{"custom_id": f"q{i}", "model": "fake", "metadata": {"topic": i % 5},
             "messages": [{"role": "user", "content": f"Summarise document {i}"}]}
            for i in range(40)]
    rows[7] = {"custom_id": "q7", "messages": []}  # a bad row: an error record, not a crash
    options = {"redis_url": URL, "prefix": f"llmguard-example-{uuid.uuid4().hex[:8]}",
               "remember": "example"} if shared else {}
    out = guard_dataset(ray.data.from_items(rows), concurrency=2, batch_size=8,
                        pipeline=make_pipeline, send=FakeLLM(latency=0.02).acompletion,
                        **options)
    records = out.take_all()  # or out.write_json(path); columns: id, line, ok, ..., record
    ray.shutdown()

    ok = sum(r["ok"] for r in records)
    print(f"{len(records)} rows on 2 Ray actors ({'quota shared through Redis' if shared else 'no Redis: half the quota each'}): "
          f"{ok} ok, {len(records) - ok} failed")
    for r in records[6:9]:
        record = json.loads(r["record"])  # the same record as `llmguard run` writes
        answer = record["response"]["choices"][0]["message"]["content"] if record["ok"] \
            else f"{record['error']['kind']}: {record['error']['message'][:60]}..."
        print(f"  {record['id']}: {answer}")


if __name__ == "__main__":
    main()
