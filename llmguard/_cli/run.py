"""The engine of ``llmguard run``: lines through a pipeline, records out, stop and resume cleanly."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, replace
from typing import Any

from .._core.tokens import request_tokens
from .._pipeline.pipeline import Pipeline
from .._pipeline.stack import StackSpec, build_stack
from .._runners.lines import InputLine
from .._runners.stopper import Stopper
from .io import FSYNC_INTERVAL, OutputWriter, read_jobs
from .limits import Limits, announce
from .provider import Provider
from .report import Progress, Tally, format_summary
from .worker import make_worker

__all__ = ["Settings", "build_pipeline", "run", "stack_spec"]

#: Exit codes (documented in ``llmguard run --help``).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CRASH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated options of one ``llmguard run``."""

    input: str
    output: str
    model: str | None = None
    api_base: str | None = None
    #: The layers' options (``--rpm``, ``--input-tpm``, ``--retries``, ``--fallback-model``, ...).
    stack: StackSpec = StackSpec()
    api_key: str | None = None
    priority_field: str | None = None
    ordered: bool = True
    resume: bool = False
    grace: float = 5.0
    metrics_port: int | None = None
    progress: bool | None = None
    verbose: bool = False
    #: Output records: ``"llmguard"`` or ``"openai-batch"`` (the Batch API's output shape).
    format: str = "llmguard"

    @property
    def window(self) -> int:
        """Lines admitted at once: more than the concurrency limit, so a line sleeping in a
        backoff or waiting for quota never idles a provider slot, and priorities have a queue
        to choose from."""
        return 512 if self.stack.adaptive else 4 * self.stack.concurrency


def stack_spec(args: Any) -> StackSpec:
    """The layers' options of a parsed ``llmguard run`` command line (raises naming a bad one)."""
    input_tpm = getattr(args, "input_tpm", None)
    output_tpm = getattr(args, "output_tpm", None)
    # Input/output quotas apart (Anthropic) give unused output back: reconcile to the usage.
    split = input_tpm is not None or output_tpm is not None
    return StackSpec(rpm=args.rpm, tpm=args.tpm, input_tpm=input_tpm, output_tpm=output_tpm,
                     burst=args.burst, margin=args.margin, refill=args.refill,
                     charge="actual" if split else "reserved", concurrency=args.concurrency,
                     adaptive=args.adaptive, retries=args.retries, timeout=args.timeout,
                     fallbacks=tuple(args.fallback_model), cache_ttl=args.cache_ttl)


def build_pipeline(s: Settings, limits: Limits | None = None) -> Pipeline:
    """The stack recipe (:func:`~llmguard._pipeline.stack.build_stack`) from the options given.

    No Timeout layer: ``--timeout`` is enforced by the provider from when an attempt is sent,
    so time spent waiting for quota or a slot is never a timeout. The rate limit is the run's
    :class:`Limits` (given or learned), which waits as long as it takes (``max_wait=None``): a
    quota-bound run paces, it does not fail lines.
    """
    return build_stack(replace(s.stack, timeout=None), name="llmguard-run",
                       metrics={} if s.metrics_port is not None else None,
                       rate_limit=make_limits(s) if limits is None else limits)


def make_limits(s: Settings) -> Limits:
    """The run's quotas: --rpm/--tpm, else learned from a real provider's headers."""
    # Learned from --api-base answers (the headers are read there; litellm hides them).
    spec = s.stack
    return Limits(rpm=spec.rpm, tpm=spec.tpm, learn=s.api_base is not None,
                  announce=announce, burst=spec.burst, margin=spec.margin, refill=spec.refill,
                  charge=spec.charge, input_tpm=spec.input_tpm, output_tpm=spec.output_tpm,
                  tokens=request_tokens)


async def run(s: Settings, skip: set[str], argv: list[str], *, total: int,
              failed_before: int = 0) -> int:
    """Run the whole file, skipping the ids in ``skip``; returns the exit code.

    One task per line in a window of :attr:`Settings.window` lines; each task writes its record
    the moment it finishes. On the first Ctrl-C/SIGTERM the provider sends nothing more, lines
    not yet sent are cancelled at once (never recorded: ``--resume`` does them), and lines at
    the provider get ``--grace`` seconds; the second signal abandons them.
    """
    out = sys.stderr if s.output == "-" else sys.stdout  # records own stdout with -o -
    limits = make_limits(s)
    if s.resume and skip:  # the killed run's requests may still count at the provider
        limits.resume()
    provider = Provider(s.api_base, s.api_key, timeout=s.stack.timeout)
    provider.open(s.model)  # imports and the session now, not inside the first admitted calls
    tally = Tally(skipped=len(skip))
    progress = Progress(tally, total=total - len(skip), enabled=s.progress, verbose=s.verbose,
                        in_flight=lambda: len(provider.sending),
                        queued=lambda: len(pending) - len(provider.sending))
    writer = OutputWriter(s.output, ordered=s.ordered, append=s.resume, format=s.format)
    worker = make_worker(build_pipeline(s, limits).build(provider.handle), provider, model=s.model,
                         cache=s.stack.cache_ttl is not None)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    room = asyncio.Event()  # a line finished, or a stop: the reader looks again
    abandoned: list[int] = []
    write_error: list[OSError] = []
    unsorted: list[OSError] = []  # the records are complete, only their reordering failed

    def stop(_name: str) -> None:
        provider.close()
        waiting = [t for t in pending if t not in provider.sending]
        for task in waiting:  # not sent yet: nothing to wait for
            task.cancel()
        if provider.sending:
            why = ("the output cannot be written" if write_error else
                   "Ctrl-C again to abandon them")
            print(f"\nllmguard run: stopping: nothing more is sent; waiting up to {s.grace:g} s "
                  f"for {len(provider.sending)} lines at the provider ({why})",
                  file=sys.stderr, flush=True)
        room.set()

    def abandon() -> None:
        abandoned.append(len(provider.sending))
        for task in list(pending):
            task.cancel()

    async def one(job: InputLine) -> None:
        try:
            record = await worker(job)
        except asyncio.CancelledError:
            return  # stopped before its answer: unrecorded, so --resume does it
        try:
            writer.write(job.index, record)
        except OSError as exc:
            if not write_error:
                write_error.append(exc)
                stopper("SIGTERM")  # cannot record answers: stop paying for them
            return
        tally.add(record)
        progress.update(record)

    def finished(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        room.set()

    def fsync_tick() -> None:  # the power-loss bound even when no line finishes for a while
        writer.sync()
        ticker[0] = loop.call_later(FSYNC_INTERVAL, fsync_tick)

    stopper = Stopper(s.grace, stop=stop, abandon=abandon)
    print(f"llmguard run: limits in use: {limits.describe()}; concurrency "
          f"{'adaptive' if s.stack.adaptive else s.stack.concurrency}", file=sys.stderr, flush=True)
    start = loop.time()
    ticker = [loop.call_later(FSYNC_INTERVAL, fsync_tick)]
    complete = False
    try:
        with stopper:
            index = 0
            for job in read_jobs(s.input, s.priority_field):
                if job.id in skip:
                    continue
                while len(pending) >= s.window and stopper.signal is None:
                    room.clear()
                    await room.wait()
                if stopper.signal is not None:
                    break
                job.index, index = index, index + 1
                task = loop.create_task(one(job))
                pending.add(task)
                task.add_done_callback(finished)
            else:
                complete = True
            while pending:
                await asyncio.wait(set(pending))
            complete = complete and stopper.signal is None
    finally:
        ticker[0].cancel()
        progress.close()
        await provider.aclose()
        try:
            writer.close(complete=complete)
        except OSError as exc:
            if complete and not write_error:  # every record is on disk; only the sort failed
                unsorted.append(exc)
            write_error.append(exc)
    wall = loop.time() - start
    print(format_summary(tally, wall, source=s.input, output=s.output,
                         quota=quota_used(limits, provider.sent, tally, wall),
                         abandoned=abandoned[0] if abandoned else 0), file=out)
    if unsorted:
        print(f"llmguard run: error: every line is recorded in {s.output}, but it could not be "
              f"put back in input order ({unsorted[0]}; sorting needs that much free space "
              f"again); free space, then sort it with:\n  llmguard run {resume_args(argv)}",
              file=sys.stderr)
        return EXIT_USAGE
    if write_error:
        print(f"llmguard run: error: cannot write output {s.output!r}: {write_error[0]}; free "
              f"space or fix permissions, then resume with:\n  llmguard run {resume_args(argv)}",
              file=sys.stderr)
        return EXIT_USAGE
    if not complete:
        print(f"llmguard run: interrupted; {tally.done} lines recorded in {s.output}. Resume "
              f"with:\n  llmguard run {resume_args(argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if failed_before:
        print(f"llmguard run: {failed_before} lines of {s.output} failed in an earlier run and "
              "were not redone; rerun with --resume --retry-failed to try them again",
              file=sys.stderr)
    return EXIT_FAILED if tally.failed or failed_before else EXIT_OK


def quota_used(limits: Limits, sent: int, tally: Tally, wall: float) -> str | None:
    """How much of the quota the run used, per minute on average (None without quotas)."""
    if limits.inner is None or wall <= 0:
        return None
    parts = []
    wall = max(wall, 60.0)  # a run shorter than a minute used its first minute, no more
    if limits.rpm:
        rate = sent / wall * 60
        parts.append(f"{rate:,.0f} requests/min of rpm {limits.rpm:,} ({rate / limits.rpm:.0%})")
    if limits.tpm:
        rate = (tally.input_tokens + tally.output_tokens) / wall * 60
        parts.append(f"{rate:,.0f} tokens/min of tpm {limits.tpm:,} ({rate / limits.tpm:.0%})")
    return "; ".join(parts) + f" [{limits.source}]"


def resume_args(argv: list[str]) -> str:
    """The command line that resumes this run."""
    import shlex

    args: list[str] = []
    hide = False
    for a in argv:
        if a in ("--overwrite", "--resume"):
            continue
        if hide:  # a key never goes to the terminal: the user passes it again
            args.append("KEY")
        elif a.startswith("--api-key="):
            args.append("--api-key=KEY")
        else:
            args.append(a)
        hide = a == "--api-key"
    return shlex.join([*args, "--resume"])
