"""Batches on Ray Data against one shared provider quota (extra ``ray``).

::

    import ray, llmguard as lg
    from llmguard.backends.redis import RedisBackend, RedisConcurrencyLimiter, RedisStore
    from llmguard.integrations.ray import guard_dataset

    def make_pipeline(backend: RedisBackend) -> lg.Pipeline:    # runs once in each actor
        return (lg.Pipeline(name="chat").cache(ttl=3600, store=RedisStore(backend))
                .retry(attempts=4).timeout(30)
                .rate_limit(rpm=500, tpm=200_000, backend=backend)
                .concurrency_limit(RedisConcurrencyLimiter(backend, 32, name="chat")))

    ds = ray.data.read_text("prompts.jsonl")                     # one "text" column per line
    out = guard_dataset(ds, concurrency=4, pipeline=make_pipeline, send=litellm.acompletion,
                        redis_url="redis://10.0.0.5:6379/0", text_column="text",
                        remember="job-42")
    out.write_json("records/")     # id, line, ok, model, deployment, error_kind, attempts, ...

* :class:`GuardedRows` is the callable class for ``Dataset.map_batches(GuardedRows,
  concurrency=N, fn_constructor_kwargs=...)``; :func:`guard_dataset` calls it for you with the
  options checked on the driver. Each actor builds the pipeline once, on one
  :class:`~llmguard.backends.redis.RedisBackend`, so N actors on any number of nodes share one
  quota, one concurrency limit, one circuit and one cache.
* Every row becomes one record with ``llmguard run``'s fields (an error is a record, not a
  failed task, unless ``on_error="raise"``); ``remember="<job>"`` keeps answered records in
  Redis so a batch Ray retries after an actor died does not pay for them twice.
* :func:`guard_rows` does the same for a list of rows inside a plain Ray task or actor.
* :func:`run_jsonl` is ``llmguard run --ray [ADDRESS]``: a JSONL file in, the same records out,
  resumable; :class:`Stack` is its picklable pipeline factory (``llmguard run``'s layers).

``import llmguard`` never imports ray, and neither does importing this module: ray is imported
by the functions that need it.
"""

from __future__ import annotations

from ._ray.actor import GuardedRows, guard_rows
from ._ray.jsonl import RunSummary, guard_dataset, run_jsonl
from ._ray.rows import parse_row
from ._ray.stack import Stack
from ._ray.tables import RowFailed

__all__ = ["GuardedRows", "RowFailed", "RunSummary", "Stack", "guard_dataset", "guard_rows",
           "parse_row", "run_jsonl"]
