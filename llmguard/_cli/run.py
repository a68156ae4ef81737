"""The engine of ``llmguard run``: lines through a pipeline, records out, stop and resume cleanly."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .._core.tokens import request_tokens
from .._pipeline.pipeline import Pipeline
from .._pipeline.stack import StackSpec, build_stack
from .._runners.lines import InputLine
from .._runners.stopper import Stopper
from .budget_options import make_budget
from .deployments import routed
from .exits import EXIT_BUDGET, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .io import FSYNC_INTERVAL, OutputWriter, read_jobs
from .limits import Limits, announce, default_concurrency, in_use
from .provider import Provider
from .report import Progress, Tally, format_summary, quota_used, resume_args, spend
from .worker import NotSent, make_worker

if TYPE_CHECKING:  # the Router and budget are imported when a run asks for them (start-up)
    from .._admission.budget.layer import Budget
    from .._routing import Router
    from .._upstream.deployments import DeploymentConfig

__all__ = ["Settings", "build_pipeline", "run", "stack_spec"]

@dataclass(frozen=True, slots=True)
class Settings:
    """The validated options of one ``llmguard run``."""

    input: str
    output: str
    model: str | None = None
    api_base: str | None = None
    #: The layers' options (``--rpm``, ``--input-tpm``, ``--retries``, ``--fallback-model``, ...).
    stack: StackSpec = StackSpec()
    #: Deployments (``--config``, repeated ``--api-base``) a Router chooses by ``strategy``.
    deployments: tuple[DeploymentConfig, ...] = ()
    strategy: str = "headroom"
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
    max_cost: float | None = None
    #: USD per million input, output[, cached input] tokens of every model, else litellm's map.
    price: tuple[float, ...] | None = None
    #: No ``--concurrency``: it follows the requests quota (``limits.default_concurrency``).
    follow_quota: bool = False

    def window(self, concurrency: int) -> int:
        """Lines admitted at once: more than the concurrency limit, so a line sleeping in a
        backoff or waiting for quota never idles a provider slot, and priorities have a queue
        to choose from."""
        return 512 if self.stack.adaptive else 4 * concurrency


def stack_spec(args: Any) -> StackSpec:
    """The layers' options of a parsed ``llmguard run`` command line (raises naming a bad one)."""
    input_tpm, output_tpm = args.input_tpm, args.output_tpm
    # Input/output quotas apart (Anthropic) give unused output back: reconcile to the usage.
    split = input_tpm is not None or output_tpm is not None
    rpm = sum(d.rpm or 0 for d in args.deployments) or None if args.deployments else args.rpm
    concurrency = args.concurrency or default_concurrency(rpm)  # a learned rpm: run()
    return StackSpec(rpm=args.rpm, tpm=args.tpm, input_tpm=input_tpm, output_tpm=output_tpm,
                     burst=args.burst, margin=args.margin, refill=args.refill,
                     charge="actual" if split else "reserved", concurrency=concurrency,
                     adaptive=args.adaptive, retries=args.retries, timeout=args.timeout,
                     fallbacks=tuple(args.fallback_model), cache_ttl=args.cache_ttl)


def build_pipeline(s: Settings, limits: Limits | Router | None = None,
                   budget: Budget | None = None) -> Pipeline:
    """The stack recipe (:func:`~llmguard._pipeline.stack.build_stack`) from the options given.

    No Timeout layer: ``--timeout`` is enforced by the provider from when an attempt is sent,
    so time spent waiting for quota or a slot is never a timeout. The rate limit is the run's
    :class:`Limits` (given or learned), which waits as long as it takes (``max_wait=None``): a
    quota-bound run paces, it does not fail lines.
    """
    return build_stack(replace(s.stack, timeout=None), name="llmguard-run",
                       metrics={} if s.metrics_port is not None else None, budget=budget,
                       rate_limit=make_limits(s) if limits is None else limits)


def make_limits(s: Settings) -> Limits | Router:
    """The run's quotas: the deployments' (a Router, waiting as long as it takes), else
    --rpm/--tpm, else learned from an --api-base's headers (litellm hides them)."""
    if s.deployments:
        from .._upstream.deployments import router_of

        return router_of(s.deployments, s.strategy, None, None)
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
        limits.assume_spent()
    provider = Provider(s.api_base, s.api_key, timeout=s.stack.timeout, deployments=s.deployments)
    provider.open(s.model)  # imports and the session now, not inside the first admitted calls
    tally = Tally(skipped=len(skip))
    progress = Progress(tally, total=total - len(skip), enabled=s.progress, verbose=s.verbose,
                        in_flight=lambda: len(provider.sending),
                        queued=lambda: len(pending) - len(provider.sending))
    writer = OutputWriter(s.output, ordered=s.ordered, append=s.resume, format=s.format)
    budget = make_budget(s.max_cost, s.price)
    pipeline = build_pipeline(s, limits, budget)
    slots = limits.slots(pipeline, follow=s.follow_quota and not s.stack.adaptive) \
        if isinstance(limits, Limits) else None  # deployments: concurrency from their rpm
    worker = make_worker(pipeline.build(provider.handle), provider,
                         model=s.model, cache=s.stack.cache_ttl is not None)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    room = asyncio.Event()  # a line finished, or a stop: the reader looks again
    abandoned: list[int] = []
    write_error: list[OSError] = []
    unsorted: list[OSError] = []  # the records are complete, only their reordering failed
    over_budget: list[str] = []  # why the spend cap stopped the run, once it did

    def halt() -> None:
        """Send nothing more: lines not sent yet are cancelled (unrecorded), lines at the
        provider carry on."""
        provider.close()
        for task in [t for t in pending if t not in provider.sending]:
            task.cancel()
        room.set()

    def stop(_name: str) -> None:
        halt()
        if provider.sending:
            why = ("the output cannot be written" if write_error else
                   "Ctrl-C again to abandon them")
            print(f"\nllmguard run: stopping: nothing more is sent; waiting up to {s.grace:g} s "
                  f"for {len(provider.sending)} lines at the provider ({why})",
                  file=sys.stderr, flush=True)

    def abandon() -> None:
        abandoned.append(len(provider.sending))
        for task in list(pending):
            task.cancel()

    async def one(job: InputLine) -> None:
        try:
            record = await worker(job)
        except asyncio.CancelledError:
            return  # stopped before its answer: unrecorded, so --resume does it
        except NotSent as exc:  # the next line could pass --max-cost: stop sending
            if not over_budget:
                over_budget.append(str(exc))
                halt()
            return
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
    announce(in_use(limits, s.stack, s.follow_quota))
    start = loop.time()
    ticker = [loop.call_later(FSYNC_INTERVAL, fsync_tick)]
    complete = False
    try:
        with stopper:
            index = 0
            for job in read_jobs(s.input, s.priority_field):
                if job.id in skip:
                    continue
                while len(pending) >= s.window(slots.limit if slots else s.stack.concurrency) \
                        and stopper.signal is None and not over_budget:
                    room.clear()
                    await room.wait()
                if stopper.signal is not None or over_budget:
                    break
                job.index, index = index, index + 1
                task = loop.create_task(one(job))
                pending.add(task)
                task.add_done_callback(finished)
            else:
                complete = True
            while pending:
                await asyncio.wait(set(pending))
            complete = complete and stopper.signal is None and not over_budget
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
                         quota=quota_used(limits, provider.sent_at, tally, wall),
                         deployments=routed(limits),
                         abandoned=abandoned[0] if abandoned else 0,
                         budget=spend(budget, total - len(skip) - tally.done)), file=out)
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
    if over_budget and stopper.signal is None:
        left = total - len(skip) - tally.done
        print(f"llmguard run: stopped at --max-cost: {spend(budget, left)}. The next line could "
              f"pass the cap ({over_budget[0]}). Continue the {left:,} lines not sent with a new "
              f"cap:\n  llmguard run {resume_args(argv, new_cap=True)}", file=sys.stderr)
        return EXIT_BUDGET
    if not complete:
        print(f"llmguard run: interrupted; {tally.done} lines recorded in {s.output}. Resume "
              f"with:\n  llmguard run {resume_args(argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if failed_before:
        print(f"llmguard run: {failed_before} lines of {s.output} failed in an earlier run and "
              "were not redone; rerun with --resume --retry-failed to try them again",
              file=sys.stderr)
    return EXIT_FAILED if tally.failed or failed_before else EXIT_OK
