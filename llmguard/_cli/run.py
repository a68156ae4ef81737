"""The engine of ``llmguard run``: lines through a pipeline, records out, stop and resume cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .._runners.batch import batch_iter
from .._core.classify import classify
from .io import Job, OutputWriter, read_jobs
from .provider import Provider, Trace, cost_of, to_json, trace
from .report import Progress, Tally, format_summary
from .._core.call import Call, Handler
from .._pipeline.pipeline import Pipeline
from .._core.tokens import extract_usage

__all__ = ["Settings", "build_pipeline", "run"]

#: Exit codes (documented in ``llmguard run --help``).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CRASH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated options of one ``llmguard run``."""

    input: str
    output: str
    model: str | None = None
    api_base: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    burst: float | None = None
    margin: float = 0.5
    concurrency: int = 16
    adaptive: bool = False
    retries: int = 3
    timeout: float | None = 60.0
    fallback_models: tuple[str, ...] = ()
    cache_ttl: float | None = None
    priority_field: str | None = None
    ordered: bool = True
    resume: bool = False
    grace: float = 5.0
    metrics_port: int | None = None
    progress: bool | None = None
    verbose: bool = False

    @property
    def window(self) -> int:
        """Lines admitted at once: more than the concurrency limit, so a line sleeping in a
        backoff or waiting for quota never idles a provider slot, and priorities have a queue
        to choose from."""
        return 512 if self.adaptive else 4 * self.concurrency


def build_pipeline(s: Settings) -> Pipeline:
    """The recommended layer order (see the README's "Layer order"), from the options given."""
    p = Pipeline(name="llmguard-run")
    if s.metrics_port is not None:
        p = p.metrics()
    if s.cache_ttl is not None:
        p = p.cache(ttl=s.cache_ttl)
    if s.fallback_models:
        p = p.fallback(*({"model": m} for m in s.fallback_models))
    if s.retries:
        p = p.retry(attempts=s.retries + 1)
    if s.timeout is not None:
        p = p.timeout(s.timeout)
    if s.rpm is not None or s.tpm is not None:
        # OpenAI-style providers charge max_tokens at admission: keep reservations as made.
        p = p.rate_limit(rpm=s.rpm, tpm=s.tpm, burst=s.burst, margin=s.margin, charge="reserved")
    return p.adaptive_concurrency() if s.adaptive else p.concurrency_limit(s.concurrency)


def _error(kind: str, exc_type: str, message: str) -> dict[str, str]:
    return {"kind": kind, "type": exc_type, "message": message}


def _describe(exc: Exception) -> dict[str, str]:
    if isinstance(exc, BaseExceptionGroup):  # FallbackExhausted: every model failed
        last = exc.exceptions[-1]
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in exc.exceptions)
        kind = classify(last).kind.value if isinstance(last, Exception) else "unknown"
        return _error(kind, type(exc).__name__, f"{exc.message}: {detail}")
    return _error(classify(exc).kind.value, type(exc).__name__, str(exc))


def _record(job: Job, **fields: Any) -> dict[str, Any]:
    record = {"id": job.id, "line": job.line, "ok": False, "model": None, "response": None,
              "error": None, "usage": None, "cost": None, "latency": None, "elapsed": None,
              "attempts": 0, "retries": 0, "fallback": False, "cached": False,
              "metadata": job.metadata}
    record.update(fields)
    return record


def make_worker(handler: Handler, provider: Provider, *, model: str | None,
                cache: bool) -> Callable[[Job], Any]:
    """The per-line coroutine function: never raises (except cancellation), returns a record."""

    async def run_one(job: Job) -> dict[str, Any]:
        if job.request is None:
            return _record(job, error=_error("invalid_input", "InvalidInput", job.problem or ""))
        request = job.request
        if model is not None:
            request["model"] = model
        else:
            request.setdefault("model", "fake")
        requested = request["model"]
        current = Trace()
        token = trace.set(current)
        loop = asyncio.get_running_loop()
        start = loop.time()
        call = Call(provider, (), request, "llmguard-run")
        call.priority = job.priority
        response = error = None
        try:
            response = await handler(call)
        except Exception as exc:  # recorded, never raised: one line's failure never stops a run
            error = _describe(exc)
        finally:
            trace.reset(token)
        elapsed = loop.time() - start
        answered = current.models[-1] if current.models else requested
        usage = extract_usage(response) if error is None else None
        return _record(
            job, ok=error is None, model=answered, error=error, elapsed=round(elapsed, 6),
            latency=None if current.latency is None else round(current.latency, 6),
            response=to_json(response), cost=cost_of(response),
            usage=None if usage is None else {"input_tokens": usage.input_tokens,
                                              "output_tokens": usage.output_tokens},
            attempts=current.attempts, retries=current.attempts - len(current.models),
            fallback=any(m != requested for m in current.models),
            cached=cache and error is None and current.attempts == 0,
        )

    return run_one


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for raw in f if raw.strip())


class _Stopper:
    """Ctrl-C (or SIGTERM): stop admitting lines, give in-flight ones ``grace`` seconds, then
    cancel them. A second Ctrl-C cancels at once."""

    __slots__ = ("_timer", "grace", "requested", "task")

    def __init__(self, grace: float, task: asyncio.Task[Any]) -> None:
        self.grace = grace
        #: True once a stop was asked for: no further line is admitted.
        self.requested = False
        #: The task running the file, cancelled when the grace period is over.
        self.task = task
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        if self.requested:
            self.task.cancel()
            return
        self.requested = True
        print(f"\nllmguard: stopping; waiting up to {self.grace:g} s for lines in flight "
              "(Ctrl-C again to abandon them)", file=sys.stderr, flush=True)
        self._timer = asyncio.get_running_loop().call_later(self.grace, self.task.cancel)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


async def run(s: Settings, pipeline: Pipeline, skip: set[str], argv: list[str]) -> int:
    """Run the whole file, skipping the ids in ``skip``; returns the exit code."""
    tally = Tally(skipped=len(skip))
    progress = Progress(tally, total=_count_lines(s.input) - len(skip), enabled=s.progress,
                        verbose=s.verbose)
    writer = OutputWriter(s.output, ordered=s.ordered, append=s.resume)
    stopper = _Stopper(s.grace, asyncio.current_task())  # type: ignore[arg-type]
    exhausted = False

    def jobs() -> Iterator[Job]:
        nonlocal exhausted
        index = 0
        for job in read_jobs(s.input, s.priority_field):
            if stopper.requested:
                return
            if job.id not in skip:
                job.index, index = index, index + 1
                yield job
        exhausted = True

    provider = Provider(s.api_base, os.environ.get("OPENAI_API_KEY"))
    worker = make_worker(pipeline.build(), provider, model=s.model,
                         cache=s.cache_ttl is not None)

    async def consume() -> None:
        outcomes = batch_iter(worker, jobs(), concurrency=s.window, ordered=False,
                              progress=False)
        async with contextlib.aclosing(outcomes):
            async for outcome in outcomes:
                job = outcome.item
                if outcome.ok:
                    record = outcome.value
                else:  # the worker records every error itself; this is a bug's last resort
                    record = _record(job, error=_describe(outcome.error))
                writer.write(job.index, record)
                tally.add(record)
                progress.update(record)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopper)
    start = loop.time()
    complete = False
    try:
        await consume()
        complete = exhausted
    except asyncio.CancelledError:
        if not stopper.requested:
            raise
        stopper.task.uncancel()  # our own stop, handled: the run ends normally below
    finally:
        stopper.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        progress.close()
        writer.close(complete=complete)
        await provider.aclose()
    print(format_summary(tally, loop.time() - start, source=s.input, output=s.output))
    if not complete:
        print(f"llmguard: interrupted; {tally.done} lines recorded in {s.output}. Resume with:\n"
              f"  llmguard run {resume_args(argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if tally.failed else EXIT_OK


def resume_args(argv: list[str]) -> str:
    """The command line that resumes this run."""
    import shlex

    args = [a for a in argv if a not in ("--overwrite", "--resume")]
    return shlex.join([*args, "--resume"])
