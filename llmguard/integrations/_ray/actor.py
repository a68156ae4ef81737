"""The per-actor guard: one pipeline, one event loop and one Redis connection per Ray actor."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import llmguard as lg

from ..._core.layer import HandlesCalls, invoke_timed
from ..._runners.lines import InputLine
from .options import check_options
from .rows import batch_digest, describe, make_record, parse_row
from .tables import raise_failures, to_rows, to_table

__all__ = ["GuardedRows", "guard_rows"]

logger = logging.getLogger("llmguard.ray")

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
    model, deployment, error_kind, attempts, cached, record`` (``record``: the full record as JSON), in
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
        self._send = send if send is not None else make_send()
        # The one composition path (binds Metrics and the like); the terminal times each attempt.
        # A send that handles the call itself (llmguard run's provider) is the terminal: it
        # also writes the response headers and cost to the call.
        terminal = self._send.handle if isinstance(self._send, HandlesCalls) else invoke_timed
        self._handler = built.build(terminal)
        self._cache = any(isinstance(layer, lg.Cache) for layer in built.layers)

    def __call__(self, batch: Any) -> Any:
        """Guard every row of ``batch``; returns a pyarrow Table of records, in input order."""
        records = self._run(self.arun(to_rows(batch)))
        if self.on_error == "raise":
            raise_failures(records)
        return to_table(records)

    async def arun(self, rows: list[Any]) -> list[dict[str, Any]]:
        """The records of ``rows`` (dicts as read from the dataset), in order, on this loop."""
        gate = asyncio.Semaphore(self._limit)
        batch = batch_digest(rows)

        async def one(index: int, raw: Any) -> dict[str, Any]:
            async with gate:
                return await self._one(parse_row(raw, text_column=self.text_column,
                                                 priority_field=self.priority_field,
                                                 position=(batch, index)))

        return list(await asyncio.gather(*(one(i, raw) for i, raw in enumerate(rows))))

    async def _one(self, row: InputLine) -> dict[str, Any]:
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
        loop = asyncio.get_running_loop()
        start = loop.time()
        call = lg.Call(self._send, (), request, self.name)
        call.priority = row.priority
        response = error = None
        try:
            response = await self._handler(call)
        except Exception as exc:  # recorded, never raised: one row's failure stops nothing
            error = describe(exc)
        record = make_record(row, response=response, error=error, current=call.record,
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


def _options_key(options: dict[str, Any]) -> bytes:
    from ray import cloudpickle

    def where(value: Any) -> Any:
        function = getattr(value, "__func__", value)  # a bound method: its function and class
        code = getattr(function, "__code__", None)
        if code is None:
            return value
        owner = type(value.__self__).__qualname__ if hasattr(value, "__self__") else None
        return ("callable", function.__module__, function.__qualname__, code.co_firstlineno,
                owner)

    return cloudpickle.dumps(sorted((name, where(value)) for name, value in options.items()))


#: Per-process guards of :func:`guard_rows`, by options (a Ray worker runs many tasks).
_GUARDS: OrderedDict[bytes, GuardedRows] = OrderedDict()
_GUARDS_LOCK = threading.Lock()


def guard_rows(rows: Iterable[Any], **options: Any) -> list[dict[str, Any]]:
    """Guard ``rows`` in a Ray task or actor; returns one ``llmguard run`` record per row.

    Takes :class:`GuardedRows`' options. The guard is built once per worker process for the
    same options and reused by later tasks (the last 8 sets of options are kept), so a quota
    and a concurrency limit on Redis are shared by every task on every node. Options match by
    value, callables (``send``, ``pipeline``) by where they are defined: a bound method of an
    object whose state changes between tasks (a client counting its calls) is still the same.
    """
    key = _options_key(options)
    with _GUARDS_LOCK:
        guard = _GUARDS.get(key)
        if guard is None:
            guard = _GUARDS[key] = GuardedRows(**options)
            while len(_GUARDS) > 8:
                _GUARDS.popitem(last=False)[1].close()
        _GUARDS.move_to_end(key)
    records = guard._run(guard.arun(list(rows)))
    if guard.on_error == "raise":
        raise_failures(records)
    return records
