"""The per-actor guard: one pipeline, one event loop and one Redis connection per Ray actor."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import llmguard as lg

from .rows import Row, Trace, describe, make_record, parse_row, trace, traced

__all__ = ["GuardedRows", "RowFailed", "check_options", "guard_rows", "redact", "to_rows"]

logger = logging.getLogger("llmguard.ray")

#: Columns of the table a batch turns into (``record`` is the full record as a JSON line).
COLUMNS = ("id", "line", "ok", "model", "error_kind", "attempts", "cached", "record")


class RowFailed(lg.LLMGuardError):
    """A row's call failed and ``on_error="raise"`` asked for a failed Ray task instead of an
    error record."""


def redact(url: str) -> str:
    """A URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        auth, _, host = rest.rpartition("@")
        user = auth.split(":", 1)[0]
        return f"{scheme}://{user + ':' if user else ':'}***@{host}"
    return url


def _is_async_callable(obj: Any) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None))


def check_options(*, pipeline: Any, send: Any, make_send: Any, redis_url: Any, prefix: Any,
                  on_error: Any, remember: Any, remember_ttl: Any, row_concurrency: Any,
                  model: Any, default_model: Any, text_column: Any, priority_field: Any,
                  name: Any, redis_timeout: Any = 2.0) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first bad option (cheap, no I/O)."""
    if isinstance(pipeline, lg.Pipeline):
        raise TypeError("pipeline must be a function (backend) -> Pipeline that each actor calls "
                        "once, not a Pipeline: layers hold per-process state (queues, locks); "
                        "write def make_pipeline(backend): return lg.Pipeline()...")
    if pipeline is not None and not callable(pipeline):
        raise TypeError(f"pipeline must be a function (backend) -> Pipeline, got {pipeline!r}")
    if (send is None) == (make_send is None):
        raise TypeError("pass exactly one of send= (an async callable send(**request)) or "
                        "make_send= (a zero-argument factory each actor calls once to get it)")
    if send is not None and not _is_async_callable(send):
        raise TypeError(f"send must be an async callable send(**request), got {send!r}; a "
                        "factory that builds a client goes in make_send=")
    if make_send is not None and not callable(make_send):
        raise TypeError(f"make_send must be a zero-argument callable, got {make_send!r}")
    if redis_url is not None and (not isinstance(redis_url, str) or "://" not in redis_url):
        raise ValueError(f"redis_url must be a Redis URL such as 'redis://127.0.0.1:6379/0', "
                         f"got {redis_url!r}")
    for label, value in (("prefix", prefix), ("name", name)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{label} must be a non-empty string, got {value!r}")
    if on_error not in ("record", "raise"):
        raise ValueError(f"on_error must be 'record' (an error becomes the row's record) or "
                         f"'raise' (the Ray task fails), got {on_error!r}")
    if remember is not None:
        if not isinstance(remember, str) or not remember:
            raise TypeError(f"remember must be a non-empty job name (str) or None, got "
                            f"{remember!r}")
        if redis_url is None:
            raise ValueError("remember= keeps answered rows in Redis: pass redis_url= too")
    if isinstance(remember_ttl, bool) or not isinstance(remember_ttl, (int, float)) \
            or not remember_ttl > 0:
        raise ValueError(f"remember_ttl must be a number of seconds > 0, got {remember_ttl!r}")
    if isinstance(redis_timeout, bool) or not isinstance(redis_timeout, (int, float)) \
            or not redis_timeout > 0:
        raise ValueError(f"redis_timeout must be a number of seconds > 0, got {redis_timeout!r}")
    if isinstance(row_concurrency, bool) or not isinstance(row_concurrency, int) \
            or row_concurrency < 1:
        raise ValueError(f"row_concurrency must be an integer >= 1, got {row_concurrency!r}")
    for label, value in (("model", model), ("default_model", default_model),
                         ("text_column", text_column), ("priority_field", priority_field)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError(f"{label} must be a non-empty string or None, got {value!r}")


def to_rows(batch: Any) -> list[dict[str, Any]]:
    """A Ray Data batch (pyarrow Table, pandas DataFrame, dict of arrays, list) as row dicts."""
    if hasattr(batch, "to_pylist"):  # pyarrow.Table: plain Python values, the best form
        return batch.to_pylist()
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas.DataFrame
        return batch.to_dict("records")
    if isinstance(batch, Mapping):  # "numpy" / "default": column -> array
        columns = {k: list(v) for k, v in batch.items()}
        n = len(next(iter(columns.values()), []))
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if isinstance(batch, Iterable):
        return [dict(row) for row in batch]
    raise TypeError(f"cannot read rows from a batch of type {type(batch).__name__}")


def _raise_failures(records: list[dict[str, Any]]) -> None:
    failed = [r for r in records if not r["ok"]]
    if failed:
        error = failed[0]["error"]
        raise RowFailed(f"{len(failed)} of {len(records)} rows failed; first: row "
                        f"{failed[0]['id']}: {error['type']}: {error['message']} "
                        "(on_error='record' turns failures into records instead)")


def _table(records: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("line", pa.int64()), ("ok", pa.bool_()),
                        ("model", pa.string()), ("error_kind", pa.string()),
                        ("attempts", pa.int64()), ("cached", pa.bool_()),
                        ("record", pa.string())])
    rows = [{"id": r["id"], "line": r["line"], "ok": r["ok"],
             "model": None if r["model"] is None else str(r["model"]),
             "error_kind": (r["error"] or {}).get("kind"), "attempts": r["attempts"],
             "cached": r["cached"],
             "record": json.dumps(r, ensure_ascii=False, default=str)} for r in records]
    return pa.Table.from_pylist(rows, schema=schema)


class GuardedRows:
    """A callable class for ``ray.data.Dataset.map_batches(GuardedRows, concurrency=N, ...)``.

    Each Ray actor builds its pipeline once, with ``pipeline(backend)`` where ``backend`` is a
    :class:`llmguard.backends.redis.RedisBackend` on ``redis_url`` (None without one): build
    the rate limit, concurrency limit, circuit breaker and cache on it and every actor, on any
    node, shares one quota. The actor keeps one event loop in a thread for its lifetime, so
    leases, Redis connections and circuit state persist across batches.

    Each batch's rows (``llmguard run`` input lines; see :func:`llmguard.integrations.ray.
    parse_row`) are sent ``row_concurrency`` at a time, and each becomes one record with the
    fields of ``llmguard run``'s output. The batch returned has the columns ``id, line, ok,
    model, error_kind, attempts, cached, record`` (``record``: the full record as JSON), in
    input order. A failed call is an error record; ``on_error="raise"`` fails the Ray task
    instead (:class:`RowFailed`). With ``remember="<job>"`` every answered record is kept in
    Redis for ``remember_ttl`` seconds, so a batch Ray retries after an actor died (or a rerun
    of the job) takes answered rows from there instead of paying for them again.
    """

    def __init__(self, pipeline: Callable[[Any], lg.Pipeline] | None = None, *,
                 send: Callable[..., Awaitable[Any]] | None = None,
                 make_send: Callable[[], Callable[..., Awaitable[Any]]] | None = None,
                 redis_url: str | None = None, prefix: str = "llmguard",
                 on_error: str = "record", remember: str | None = None,
                 remember_ttl: float = 86_400.0, row_concurrency: int = 16,
                 model: str | None = None, default_model: str | None = None,
                 text_column: str | None = None, priority_field: str | None = None,
                 name: str = "ray", redis_timeout: float = 2.0) -> None:
        check_options(pipeline=pipeline, send=send, make_send=make_send, redis_url=redis_url,
                      prefix=prefix, on_error=on_error, remember=remember,
                      remember_ttl=remember_ttl, row_concurrency=row_concurrency, model=model,
                      default_model=default_model, text_column=text_column,
                      priority_field=priority_field, name=name, redis_timeout=redis_timeout)
        self.on_error, self.remember_ttl = on_error, float(remember_ttl)
        self.model, self.default_model = model, default_model
        self.text_column, self.priority_field, self.name = text_column, priority_field, name
        self._limit = row_concurrency
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="llmguard-ray-loop")
        self._thread.start()
        self._run(self._setup(pipeline, send, make_send, redis_url, prefix, remember,
                              float(redis_timeout)))

    def _run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    async def _setup(self, pipeline: Any, send: Any, make_send: Any, redis_url: str | None,
                     prefix: str, remember: str | None, redis_timeout: float) -> None:
        self.backend = self.done = self._done_backend = None
        if redis_url is not None:
            from llmguard.backends.redis import RedisBackend, RedisStore

            self.backend = RedisBackend(redis_url, prefix=prefix, timeout=redis_timeout)
            if remember is not None:
                # Its own connection, failing loudly and patient: a done-set read that timed out
                # on a busy node would send an answered row again. No fill lock: one actor
                # answers a row at a time.
                self._done_backend = RedisBackend(redis_url, prefix=prefix, on_error="fail",
                                                  timeout=max(5.0, redis_timeout))
                self.done = RedisStore(self._done_backend, namespace=f"ray-done:{remember}",
                                       lock_ttl=0, max_bytes=16 << 20)
        built = lg.Pipeline(name=self.name) if pipeline is None else pipeline(self.backend)
        if not isinstance(built, lg.Pipeline):
            raise TypeError(f"pipeline(backend) must return an llmguard.Pipeline, got {built!r}")
        self.pipeline = built
        self._handler = lg.compose(built.layers)
        self._send = traced(send if send is not None else make_send())
        self._cache = any(type(layer).__name__ == "Cache" for layer in built.layers)

    def __call__(self, batch: Any) -> Any:
        """Guard every row of ``batch``; returns a pyarrow Table of records, in input order."""
        records = self._run(self.arun(to_rows(batch)))
        if self.on_error == "raise":
            _raise_failures(records)
        return _table(records)

    async def arun(self, rows: list[Any]) -> list[dict[str, Any]]:
        """The records of ``rows`` (dicts as read from the dataset), in order, on this loop."""
        gate = asyncio.Semaphore(self._limit)

        async def one(raw: Any) -> dict[str, Any]:
            async with gate:
                return await self._one(parse_row(raw, text_column=self.text_column,
                                                 priority_field=self.priority_field))

        return list(await asyncio.gather(*(one(raw) for raw in rows)))

    async def _one(self, row: Row) -> dict[str, Any]:
        if row.request is None:
            return make_record(row, error={"kind": "invalid_input", "type": "InvalidInput",
                                           "message": row.problem or ""})
        if self.done is not None:
            try:
                kept = await self.done.get(row.id)
            except Exception as exc:  # Redis down: the row is sent (it may be paid twice)
                logger.warning("llmguard: could not read answered rows from Redis (%s: %s); "
                               "sending row %s", type(exc).__name__, exc, row.id)
                kept = None
            if isinstance(kept, dict):
                return kept
        request = dict(row.request)
        if self.model is not None:
            request["model"] = self.model
        elif self.default_model is not None:
            request.setdefault("model", self.default_model)
        requested = request.get("model")
        current = Trace()
        token = trace.set(current)
        loop = asyncio.get_running_loop()
        start = loop.time()
        call = lg.Call(self._send, (), request, self.name)
        call.priority = row.priority
        response = error = None
        try:
            response = await self._handler(call)
        except Exception as exc:  # recorded, never raised: one row's failure stops nothing
            error = describe(exc)
        finally:
            trace.reset(token)
        record = make_record(row, response=response, error=error, current=current,
                             elapsed=loop.time() - start, requested=requested, cache=self._cache)
        if self.done is not None and record["ok"]:
            try:  # awaited: once the next row starts, this one is safe from a crash
                await self.done.set(row.id, record, self.remember_ttl)
            except Exception as exc:  # too large, or Redis down: the record is still returned
                logger.warning("llmguard: could not keep the answer of row %s in Redis (%s: %s); "
                               "a retry of this batch would send it again",
                               row.id, type(exc).__name__, exc)
        return record

    def close(self) -> None:
        """Close the Redis connection and stop this actor's loop (optional: Ray ends actors)."""
        if self._loop.is_closed():
            return
        for backend in (self.backend, self._done_backend):
            if backend is not None:
                self._run(backend.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __repr__(self) -> str:
        return (f"<GuardedRows name={self.name!r} pipeline={self.pipeline!r} "
                f"remember={self.done is not None} on_error={self.on_error!r}>")


#: Per-process guards of :func:`guard_rows`, by options (a Ray worker runs many tasks).
_GUARDS: OrderedDict[bytes, GuardedRows] = OrderedDict()
_GUARDS_LOCK = threading.Lock()


def guard_rows(rows: Iterable[Any], **options: Any) -> list[dict[str, Any]]:
    """Guard ``rows`` in a Ray task or actor; returns one ``llmguard run`` record per row.

    Takes :class:`GuardedRows`' options. The guard is built once per worker process for the
    same options and reused by later tasks (the last 8 sets of options are kept), so a quota
    and a concurrency limit on Redis are shared by every task on every node.
    """
    from ray import cloudpickle

    key = cloudpickle.dumps(sorted(options.items()))
    with _GUARDS_LOCK:
        guard = _GUARDS.get(key)
        if guard is None:
            guard = _GUARDS[key] = GuardedRows(**options)
            while len(_GUARDS) > 8:
                _GUARDS.popitem(last=False)[1].close()
        _GUARDS.move_to_end(key)
    records = guard._run(guard.arun(list(rows)))
    if guard.on_error == "raise":
        _raise_failures(records)
    return records
