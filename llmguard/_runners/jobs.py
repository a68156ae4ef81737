"""Background jobs: one call or one batch run as an asyncio task, with an id to poll and cancel."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from .batch import batch_iter
from .._core.check import callable_or_none, number
from .._core.errors import JobNotFound, QueueFull
from .._core.public import public
from .jobstate import TERMINAL, JobStatus

__all__ = ["Job", "JobManager", "JobStatus"]


@public
class Job:
    """One background call or batch. Read its fields; ``await job.wait()``; ``job.cancel()``."""

    __slots__ = ("id", "status", "done", "total", "result", "error", "created", "started",
                 "finished", "_task", "_ended")

    def __init__(self) -> None:
        #: Opaque id for ``JobManager.get``.
        self.id = uuid.uuid4().hex[:16]
        self.status = JobStatus.PENDING
        #: Progress: items finished and items in total (1 for a single call; None if unknown).
        self.done, self.total = 0, None
        #: The call's return value, or the batch's list of Outcomes; the exception on failure.
        self.result: Any = None
        self.error: BaseException | None = None
        #: Wall-clock timestamps (``time.time()``) for display; None until reached.
        self.created: float = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended = 0.0  # loop time of the end, for expiry

    @property
    def progress(self) -> tuple[int, int | None]:
        """``(done, total)``."""
        return self.done, self.total

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL

    async def wait(self, timeout: float | None = None) -> Job:
        """Wait until the job ends (``TimeoutError`` after ``timeout`` s; the job keeps running)."""
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            raise TimeoutError(f"job {self.id} still {self.status.value} after {timeout} s; "
                               "wait longer, or cancel() it")
        return self

    def cancel(self) -> bool:
        """Stop the job: a batch admits nothing more and its in-flight items are cancelled after
        the batch's ``grace``; a single call is cancelled. False if it had already finished."""
        if self.is_finished or self._task is None:
            return False
        if self.status is JobStatus.PENDING:  # its task never ran, so it cannot record this itself
            self.status, self.finished = JobStatus.CANCELLED, time.time()
            self._ended = asyncio.get_running_loop().time()
        return self._task.cancel()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view (the result is summarised for batches, repr'd when not JSON-friendly)."""
        result = self.result
        if isinstance(result, list) and result and hasattr(result[0], "ok"):
            ok = sum(o.ok for o in result)
            result = {"ok": ok, "failed": len(result) - ok}
        elif not isinstance(result, (str, int, float, bool, type(None), list, dict)):
            result = repr(result)
        return {"id": self.id, "status": self.status.value, "done": self.done, "total": self.total,
                "result": result, "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
                "created": self.created, "started": self.started, "finished": self.finished}

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status.value} {self.done}/{self.total}>"


@public
class JobManager:
    """Runs jobs in the background and keeps them ``ttl`` seconds after they finish.

    At most ``max_jobs`` jobs are kept; when full, the oldest finished job is forgotten, and
    ``submit`` raises :class:`llmguard.QueueFull` when all of them are still running.
    ``async with JobManager()`` cancels running jobs on exit.
    """

    __slots__ = ("ttl", "max_jobs", "_jobs")

    def __init__(self, *, ttl: float = 3600.0, max_jobs: int = 10_000) -> None:
        number("ttl", ttl, unit=" of seconds", hint="; finished jobs are kept that long")
        number("max_jobs", max_jobs, integer=True, low=1, low_open=False)
        self.ttl, self.max_jobs = float(ttl), max_jobs
        self._jobs: dict[str, Job] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        """Start ``await fn(*args, **kwargs)`` in the background."""
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {fn!r}")
        job = self._new()
        job.total = 1

        async def run() -> Any:
            result = await fn(*args, **kwargs)
            job.done = 1
            return result

        return self._start(job, run)

    def submit_batch(self, fn: Callable[[Any], Any], items: Iterable[Any] | AsyncIterable[Any],
                     **options: Any) -> Job:
        """Start :func:`llmguard.batch` in the background; the job's progress counts finished items
        and its result is the list of Outcomes (item failures do not fail the job). A cancelled
        or failed batch job keeps, as its result, every outcome that finished (the items drained
        within ``grace`` included)."""
        outcomes: list[Any] = []
        hook = callable_or_none("on_result", options.pop("on_result", None))

        def collect(outcome: Any) -> Any:  # batch reports drained outcomes here, not by yield
            outcomes.append(outcome)
            job.done += 1
            return None if hook is None else hook(outcome)

        # bad options fail here, not inside the job
        stream = batch_iter(fn, items, on_result=collect, **options)
        job = self._new()
        job.total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]

        async def run() -> Any:
            try:
                async for _ in stream:
                    pass
            finally:
                job.result = outcomes  # kept when the job is cancelled or fails
            return outcomes

        return self._start(job, run)

    def _new(self) -> Job:
        self._expire()
        if len(self._jobs) >= self.max_jobs:
            finished = [j for j in self._jobs.values() if j.is_finished]
            if not finished:
                raise QueueFull(f"{self.max_jobs} jobs are running (max_jobs={self.max_jobs}); "
                                "wait for some to finish or raise max_jobs")
            del self._jobs[min(finished, key=lambda j: j._ended).id]
        job = Job()
        self._jobs[job.id] = job
        return job

    def _start(self, job: Job, run: Callable[[], Any]) -> Job:
        loop = asyncio.get_running_loop()

        async def main() -> None:
            job.status, job.started = JobStatus.RUNNING, time.time()
            try:
                job.result = await run()
                job.status = JobStatus.COMPLETED
            except asyncio.CancelledError:
                job.status = JobStatus.CANCELLED  # swallowed: the job owns this task
            except Exception as exc:
                job.error, job.status = exc, JobStatus.FAILED
            finally:
                job.finished, job._ended = time.time(), loop.time()

        job._task = loop.create_task(main(), name=f"llmguard-job-{job.id}")
        return job

    def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        for job in [j for j in self._jobs.values() if j.is_finished and now - j._ended >= self.ttl]:
            del self._jobs[job.id]

    def get(self, job_id: str) -> Job:
        """The job with that id; :class:`llmguard.JobNotFound` if unknown or expired."""
        self._expire()
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(f"no job with id {job_id!r}: it never existed or finished more than "
                              f"ttl={self.ttl:g} s ago and expired; use an id returned by submit()") from None

    def list(self, status: JobStatus | str | None = None) -> list[Job]:
        """Jobs kept now, oldest first, optionally only those with ``status``."""
        self._expire()
        wanted = None if status is None else JobStatus(status)
        return [j for j in self._jobs.values() if wanted is None or j.status is wanted]

    async def aclose(self) -> None:
        """Cancel running jobs and wait for them to end."""
        tasks = [j._task for j in self._jobs.values() if j._task is not None and j.cancel()]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> JobManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        running = sum(j.status is JobStatus.RUNNING for j in self._jobs.values())
        return f"<JobManager jobs={len(self._jobs)} running={running} ttl={self.ttl:g}>"
