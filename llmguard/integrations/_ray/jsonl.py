"""``llmguard run --ray``: a JSONL file through actors on a Ray cluster, resumable."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .actor import GuardedRows
from .options import check_options, redact
from .rows import parse_row
from .stack import Stack

__all__ = ["RunSummary", "guard_dataset", "run_jsonl"]


def guard_dataset(dataset: Any, *, concurrency: int = 2, batch_size: int = 16,
                  num_cpus: float = 0.25, ray_remote_args: dict[str, Any] | None = None,
                  **options: Any) -> Any:
    """``dataset.map_batches(GuardedRows, ...)`` with the options checked here, on the driver.

    ``concurrency`` actors (each ``num_cpus``: LLM calls wait on the network, not the CPU)
    each run :class:`GuardedRows` with ``options``; ``batch_size`` rows per Ray task. Ray
    restarts a dead actor and runs its batch again (``max_restarts``/``max_task_retries``).
    """
    check_options(**{**_DEFAULTS, **options})
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency (actors) must be an integer >= 1, got {concurrency!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0:
        raise ValueError(f"num_cpus (per actor) must be a number >= 0, got {num_cpus!r}")
    import ray.data

    return dataset.map_batches(GuardedRows, compute=ray.data.ActorPoolStrategy(size=concurrency),
                               batch_size=batch_size, batch_format="pyarrow", num_cpus=num_cpus,
                               fn_constructor_kwargs=options, **(ray_remote_args or {}))


_DEFAULTS: dict[str, Any] = {
    "pipeline": None, "send": None, "make_send": None, "redis_url": None, "prefix": "llmguard",
    "on_error": "record", "remember": None, "remember_ttl": 86_400.0, "row_concurrency": 16,
    "model": None, "default_model": None, "text_column": None, "priority_field": None,
    "name": "ray", "redis_timeout": 2.0,
}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """How a :func:`run_jsonl` ended."""

    lines: int
    ok: int
    failed: int
    #: Lines already in the output (``resume=True``), not sent again.
    skipped: int
    seconds: float
    #: False when interrupted (Ctrl-C): ``resume=True`` continues.
    complete: bool

    @property
    def exit_code(self) -> int:
        """``llmguard run``'s exit code: 0 all ok, 1 some failed, 130 interrupted."""
        return 130 if not self.complete else 1 if self.failed else 0


def done_ids(path: str, *, redo_failed: bool) -> set[str]:
    """Ids recorded in ``path``; a torn last line (a kill mid-write) is cut off, and with
    ``redo_failed`` the error records are removed so those lines run again."""
    ids: set[str] = set()
    if not os.path.exists(path):
        return ids
    kept, dropped = [], False
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                record = json.loads(raw)
                record_id, ok = str(record["id"]), record["ok"]
            except (ValueError, KeyError, TypeError):
                if raw.endswith(b"\n"):
                    raise ValueError(f"{path} line {line_no} is not an llmguard output record; "
                                     "resume needs the output of an earlier llmguard run") from None
                dropped = True
                break
            if ok or not redo_failed:
                ids.add(record_id)
                kept.append(raw)
            else:
                dropped = True
    if dropped:
        with open(f"{path}.resuming", "wb") as out:
            out.writelines(kept)
        os.replace(f"{path}.resuming", path)
    return ids


def _sort_by_line(path: str) -> None:
    offsets: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        pos = 0
        for raw in f:
            offsets.append((json.loads(raw)["line"] or 0, pos))
            pos += len(raw)
        offsets.sort()
        with open(f"{path}.sorting", "wb") as out:
            for _, offset in offsets:
                f.seek(offset)
                out.write(f.readline())
    os.replace(f"{path}.sorting", path)


def _forget(redis_url: str, prefix: str, job: str) -> None:
    """Drop the answered rows a previous run of this job kept (a fresh run redoes them)."""
    from llmguard.backends.redis import RedisBackend, RedisStore

    async def clear() -> None:
        backend = RedisBackend(redis_url, prefix=prefix, on_error="fail")
        try:
            await RedisStore(backend, namespace=f"ray-done:{job}", lock_ttl=0).clear()
        finally:
            await backend.aclose()

    asyncio.run(clear())


def run_jsonl(input_path: str, output_path: str, *, address: str | None = None,
              actors: int = 2, pipeline: Callable[[Any], Any] | None = None,
              send: Any = None, make_send: Any = None, redis_url: str | None = None,
              prefix: str = "llmguard", resume: bool = False, retry_failed: bool = False,
              overwrite: bool = False, ordered: bool = True, batch_size: int = 16,
              row_concurrency: int | None = None, num_cpus: float = 0.25,
              model: str | None = None, default_model: str | None = None,
              priority_field: str | None = None, progress: bool = False,
              verbose: bool = False, quiet: bool = False) -> RunSummary:
    """Run a JSONL file of chat requests on Ray and write ``llmguard run``'s records.

    The input is read on the driver (one item per non-blank line, lines already in the output
    skipped with ``resume=True``) and sent through ``actors`` :class:`GuardedRows` actors on
    the cluster at ``address`` (a local Ray when None and none is running). Records are
    written as they come back, in input order (``ordered``), flushed, so the output is the
    checkpoint: ``resume=True`` skips every id in it (``retry_failed=True`` also redoes the
    failed lines). With ``redis_url`` the actors share one quota, one concurrency limit and
    one cache, and answered rows are kept in Redis (a dead actor's batch, or a rerun after an
    interrupted driver, does not pay for them twice). Without it each actor gets
    ``1/actors`` of the quotas of the default :class:`Stack`.

    ``pipeline`` defaults to ``Stack()``; ``row_concurrency`` (rows in flight per actor)
    defaults to the stack's concurrency. ``progress`` shows Ray Data's progress bars,
    ``verbose`` Ray's logs; ``quiet`` prints no summary. Raises ``ValueError``/``TypeError`` naming a bad
    option or file, before Ray starts.
    """
    if not isinstance(input_path, (str, os.PathLike)) or not os.path.isfile(input_path):
        raise ValueError(f"input_path {input_path!r} does not exist (or is not a file)")
    input_path, output_path = os.fspath(input_path), os.fspath(output_path)
    if os.path.abspath(input_path) == os.path.abspath(output_path):
        raise ValueError("output_path must differ from input_path")
    if not os.path.isdir(os.path.dirname(os.path.abspath(output_path))):
        raise ValueError(f"the directory of output_path {output_path!r} does not exist")
    if retry_failed and not resume:
        raise ValueError("retry_failed=True needs resume=True (it redoes failed lines)")
    if resume and overwrite:
        raise ValueError("pass resume=True or overwrite=True, not both")
    exists = os.path.exists(output_path) and os.path.getsize(output_path) > 0
    if exists and not (resume or overwrite):
        raise ValueError(f"output {output_path!r} exists: pass resume=True to continue that "
                         "run or overwrite=True to start again")
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ValueError(f"actors must be an integer >= 1, got {actors!r}")
    if pipeline is None:
        pipeline = Stack(share=1 if redis_url else actors)
    if row_concurrency is None:
        row_concurrency = max(1, getattr(pipeline, "concurrency", 16) // (
            1 if redis_url else actors))
    job = hashlib.sha256(os.path.abspath(output_path).encode()).hexdigest()[:16]
    options = dict(pipeline=pipeline, send=send, make_send=make_send, redis_url=redis_url,
                   prefix=prefix, remember=job if redis_url else None, text_column="text",
                   row_concurrency=row_concurrency, model=model, default_model=default_model,
                   priority_field=priority_field, name="llmguard-run")
    check_options(**{**_DEFAULTS, **options})

    skip = done_ids(output_path, redo_failed=retry_failed) if resume else set()
    items = []
    with open(input_path, encoding="utf-8", errors="replace") as f:
        for line_no, text in enumerate(f, 1):
            if text.strip() and parse_row({"line": line_no, "text": text},
                                          text_column="text").id not in skip:
                items.append({"line": line_no, "text": text})
    if redis_url and not resume:
        _forget(redis_url, prefix, job)

    import ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.WARNING,
                 **({"num_cpus": max(2, math.ceil(actors * num_cpus) + 1)}
                    if address is None else {}))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = ordered
    context.enable_progress_bars = progress
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    start = time.monotonic()
    ok = failed = 0
    answered: Counter[str] = Counter()  # by the deployment that answered (with deployments)
    complete = False
    append = resume and exists
    try:
        with open(output_path, "a" if resume else "w", encoding="utf-8") as out:
            if items:
                blocks = max(1, min(math.ceil(len(items) / batch_size), 10_000))
                dataset = ray.data.from_items(items, override_num_blocks=blocks)
                guarded = guard_dataset(dataset, concurrency=actors, batch_size=batch_size,
                                        num_cpus=num_cpus, **options)
                for table in guarded.iter_batches(batch_size=None, batch_format="pyarrow"):
                    column = table.column("ok").to_pylist()
                    out.writelines(r + "\n" for r in table.column("record").to_pylist())
                    out.flush()
                    ok += sum(column)
                    failed += len(column) - sum(column)
                    answered.update(d for d, good in zip(table.column("deployment").to_pylist(),
                                                         column) if d and good)
            complete = True
    except KeyboardInterrupt:
        print(f"\nllmguard: interrupted; {ok + failed} lines recorded in {output_path}; "
              "resume=True (--resume) continues", file=sys.stderr)
    finally:
        if started:
            ray.shutdown()
    if complete and ordered and append:  # resumed records were appended after older ones
        _sort_by_line(output_path)
    summary = RunSummary(ok + failed, ok, failed, len(skip), time.monotonic() - start, complete)
    if not quiet:
        where = "a local Ray" if address is None else f"Ray at {redact(address)}"
        shared = f"shared through Redis at {redact(redis_url)}" if redis_url else \
            "no Redis: each actor has 1/{actors} of the quotas".format(actors=actors)
        print(f"llmguard run --ray: {input_path} -> {output_path} ({actors} actors on {where}; "
              f"{shared})\n  lines       {summary.lines} done: {ok} ok, {failed} failed"
              f"{f' ({len(skip)} already in the output)' if skip else ''}\n"
              f"  wall time   {summary.seconds:.2f} s" + ("\n  deployments " + "; ".join(
                  f"{name} {n} answered" for name, n in sorted(answered.items()))) * bool(answered))
    return summary
