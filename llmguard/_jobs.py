"""Background jobs: submit a call or a batch, poll its status and progress, wait, cancel."""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._batch import batch
from ._errors import JobNotFound

__all__ = ["Job", "JobManager", "JobStatus"]


class JobStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_FINISHED = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


class Job:
    """One background job. Timestamps are wall-clock (``time.time()``) for display."""

    __slots__ = ("id", "name", "status", "done", "total", "result", "error", "created_at",
                 "started_at", "finished_at", "_task", "_ended")

    def __init__(self, job_id: str, name: str, total: int | None) -> None:
        self.id, self.name = job_id, name
        self.status = JobStatus.PENDING
        #: Progress: items finished, and the total when known (a single call is 0/1 then 1/1).
        self.done, self.total = 0, total
        self.result: Any = None
        self.error: BaseException | None = None
        self.created_at = time.time()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._ended: float | None = None  # loop time, for expiry (virtual in tests)

    @property
    def finished(self) -> bool:
        return self.status in _FINISHED

    async def wait(self, timeout: float | None = None) -> Any:
        """Wait for the job; return its result or raise its error (or TimeoutError)."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        if self.error is not None:
            raise self.error
        return self.result

    def cancel(self) -> bool:
        """Cancel the job: nothing more starts, calls in flight are cancelled."""
        if self.finished or self._task is None:
            return False
        return self._task.cancel()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot for an API response or a log line."""
        return {
            "id": self.id, "name": self.name, "status": self.status.value,
            "progress": {"done": self.done, "total": self.total},
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
            "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def __repr__(self) -> str:
        total = "?" if self.total is None else self.total
        return f"<Job {self.id} {self.status.value} {self.done}/{total}>"


class JobManager:
    """Runs jobs in the background of the running event loop and keeps them for ``ttl`` seconds
    after they finish. ``max_running`` bounds jobs running at once (others wait as pending).
    ``async with JobManager() as jobs:`` cancels what is still running on exit.
    """

    def __init__(self, *, ttl: float = 3600.0, max_running: int | None = None) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        if max_running is not None and (not isinstance(max_running, int) or max_running < 1):
            raise ValueError(f"max_running must be an integer >= 1 or None, got {max_running!r}")
        self.ttl = ttl
        self._slots = None if max_running is None else asyncio.Semaphore(max_running)
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)

    def _start(self, job: Job, work: Callable[[], Any]) -> Job:
        async def run() -> None:
            try:
                if self._slots is not None:
                    async with self._slots:
                        await self._run(job, work)
                else:
                    await self._run(job, work)
            except asyncio.CancelledError:
                job.status = JobStatus.CANCELLED
                job.finished_at, job._ended = time.time(), asyncio.get_running_loop().time()
                raise

        self._expire()
        self._jobs[job.id] = job
        job._task = asyncio.get_running_loop().create_task(run(), name=f"llmguard-job-{job.id}")
        return job

    @staticmethod
    async def _run(job: Job, work: Callable[[], Any]) -> None:
        job.status, job.started_at = JobStatus.RUNNING, time.time()
        try:
            job.result = await work()
            job.status = JobStatus.COMPLETED
            if job.total == 1:
                job.done = 1
        except Exception as exc:
            job.error, job.status = exc, JobStatus.FAILED
        job.finished_at, job._ended = time.time(), asyncio.get_running_loop().time()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        """Start ``await fn(*args, **kwargs)`` in the background."""
        if not callable(fn):
            raise TypeError(f"fn must be an async callable, got {fn!r}")
        job = Job(f"job-{next(self._ids)}", getattr(fn, "__qualname__", "call"), 1)
        return self._start(job, lambda: fn(*args, **kwargs))

    def submit_batch(self, fn: Callable[[Any], Any], items: Iterable[Any],
                     **batch_options: Any) -> Job:
        """Start :func:`llmguard.batch` in the background; progress counts finished items.

        The job's result is the list of outcomes (a failed item does not fail the job).
        """
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        job = Job(f"job-{next(self._ids)}", getattr(fn, "__qualname__", "batch"), total)

        def count(_outcome: Any) -> None:
            job.done += 1

        batch_options.setdefault("progress", False)
        return self._start(job, lambda: batch(fn, items, on_result=count, **batch_options))

    def get(self, job_id: str) -> Job:
        """The job with that id; :class:`llmguard.JobNotFound` if unknown or expired."""
        self._expire()
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(
                f"no job {job_id!r}: it never existed or finished more than {self.ttl:g} s ago "
                f"(known: {', '.join(list(self._jobs)[:5]) or 'none'})"
            ) from None

    def list(self, status: JobStatus | str | None = None) -> list[Job]:
        self._expire()
        wanted = None if status is None else JobStatus(status)
        return [j for j in self._jobs.values() if wanted is None or j.status is wanted]

    def _expire(self) -> None:
        try:
            cutoff = asyncio.get_running_loop().time() - self.ttl
        except RuntimeError:
            cutoff = time.monotonic() - self.ttl  # asyncio's default clock
        for job_id in [i for i, j in self._jobs.items()
                       if j._ended is not None and j._ended < cutoff]:
            del self._jobs[job_id]

    async def aclose(self) -> None:
        """Cancel every job still pending or running and wait for them to stop."""
        tasks = [j._task for j in self._jobs.values() if j._task is not None and not j.finished]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> JobManager:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
