"""``llmguard run --batch-api``: the records of an online run, through the provider's batch API.

Lines go to OpenAI's Batch API (``--provider openai``, the default, any OpenAI-compatible
``--api-base``) or Anthropic's Message Batches (``--provider anthropic``) at the batch price.
With ``--max-cost`` each batch reserves its lines' maximum cost at the batch price before it is
submitted and settles to its output's usage; once the next line could pass the cap nothing more
is submitted (exit 4, as online). The ledger ``OUTPUT.batches.jsonl`` beside the output records every submission before it happens,
so ``--resume`` after a kill collects the batches already submitted instead of paying for their
lines again. Ctrl-C while polling exits at once: the batches keep running at the provider (or are
cancelled there with ``--cancel-on-interrupt``) and ``--resume`` collects them.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import replace
from typing import Any

from .._core.redact import redact
from .._runners.record import invalid_input, make_record
from .._upstream.batches.cost import Bill, budget_prices
from .._upstream.batches.engine import BatchRun, describe_running, run_batches
from .._upstream.batches.ledger import FileLedger
from .._upstream.batches.plan import Request
from .._upstream.batches.results import LineResult
from .._upstream.batches.spend import BatchSpend
from .batch_options import BatchOptions, ledger_path
from .io import OutputWriter, read_jobs
from .budget_options import make_budget
from .exits import EXIT_BUDGET, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .report import spend
from .run import Settings, resume_args

__all__ = ["run_batch_api"]


def _client(s: Settings, options: BatchOptions) -> Any:
    if options.provider == "anthropic":
        from anthropic import AsyncAnthropic

        base = s.api_base.removesuffix("/").removesuffix("/v1") if s.api_base else None
        return AsyncAnthropic(base_url=base, api_key=s.api_key or "")
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=s.api_base, api_key=s.api_key or "")


def _provider(s: Settings, options: BatchOptions) -> Any:
    if options.provider == "anthropic":
        from .._upstream.batches.anthropic_batches import AnthropicBatches

        return AnthropicBatches(_client(s, options))
    from .._upstream.batches.openai_batches import OpenAIBatches

    return OpenAIBatches(_client(s, options))


async def run_batch_api(s: Settings, options: BatchOptions, skip: set[str], argv: list[str],
                        *, total: int) -> int:
    """Run the file through the provider's batch API; returns the exit code."""
    hide = (lambda text: text.replace(s.api_key, "***")) if s.api_key else (lambda text: text)
    started = time.monotonic()
    ledger = FileLedger(ledger_path(s.output))
    writer = OutputWriter(s.output, ordered=s.ordered, append=s.resume, format=s.format)
    lines: dict[str, tuple[int, Any, str | None]] = {}  # id -> (line, metadata, model)
    requests: list[Request] = []
    invalid = ok = failed = 0
    for job in read_jobs(s.input, s.priority_field):
        if job.id in skip:
            continue
        if job.request is None:
            writer.write(job.line, invalid_input(job.id, job.line, job.metadata,
                                                 job.problem or "invalid"))
            invalid += 1
            continue
        body = dict(job.request)
        if s.model is not None:
            body["model"] = s.model
        body.pop("stream", None)  # a batch answers whole responses
        lines[job.id] = (job.line, job.metadata, body.get("model"))
        requests.append(Request(job.id, body))
    budget = make_budget(s.max_cost, s.price)
    bill = Bill() if budget is None else Bill(prices=budget_prices(budget))
    deferred: list[Request] = []

    def on_result(result: LineResult) -> None:
        nonlocal ok, failed
        line, metadata, model = lines[result.id]
        if result.error is None:
            record = make_record(result.id, line, metadata, response=result.response,
                                 requested=model)
            usage = record["usage"]
            if usage is not None:
                record["cost"] = bill.add(str(record["model"] or model), usage["input_tokens"],
                                          usage["output_tokens"])
            ok += 1
        else:
            error = {k: hide(str(redact(v))) for k, v in result.error.items()}
            record = make_record(result.id, line, metadata, error=error, requested=model)
            failed += 1
        record["attempts"], record["retries"] = result.attempts, result.attempts - 1
        writer.write(line, record)

    def on_progress(finished: int) -> None:  # the batches' request_counts, polled
        if bar is not None:
            bar.n = finished
            bar.refresh()

    async def resend_online(retry: list[Request]) -> None:
        deferred.extend(retry)

    bar = _bar(len(requests), s.progress)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    provider = _provider(s, options)
    outcome = BatchRun()
    try:
        outcome = await run_batches(
            requests, provider, ledger, on_result=on_result, on_progress=on_progress,
            retries=1, resend_online=resend_online if options.fallback == "online" else None,
            enqueued_tokens=options.enqueued_tokens, poll=options.poll,
            max_poll=options.max_poll, stop=stop,
            spend=None if budget is None else BatchSpend(budget))
        if outcome.interrupted and options.cancel_on_interrupt:
            for batch_id in outcome.running:
                await provider.cancel(batch_id)
    except Exception as exc:  # the provider refused us: say what, never the key
        writer.close(complete=False)
        print(f"llmguard run: error: the {options.provider} batch API failed: "
              f"{hide(str(redact(f'{type(exc).__name__}: {exc}')))}\n  (the ledger "
              f"{ledger.path} keeps what was submitted; resume with: llmguard run "
              f"{resume_args(argv)})", file=sys.stderr)
        return EXIT_USAGE
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        ledger.close()
        await provider.close()
        if bar is not None:
            bar.close()
    if outcome.interrupted:
        writer.close(complete=False)
        what = ("cancelled at the provider; --resume collects the lines they finished and "
                "sends the rest again" if options.cancel_on_interrupt else
                f"{describe_running(outcome)}; --resume collects them when they end and "
                "submits nothing twice (add --cancel-on-interrupt to cancel them instead)")
        print(f"\nllmguard run: interrupted: {ok + failed} lines recorded in {s.output}; "
              f"{len(outcome.running)} batch(es) {what}. Resume with:\n  llmguard run "
              f"{resume_args(argv)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    writer.close(complete=not deferred and not outcome.not_sent)
    wall = time.monotonic() - started
    print(_summary(s, outcome, ok=ok, failed=failed, invalid=invalid, skipped=len(skip),
                   bill=bill, wall=wall, deferred=len(deferred),
                   budget=spend(budget, len(outcome.not_sent))),
          file=sys.stderr if s.output == "-" else sys.stdout, flush=True)
    if outcome.not_sent:
        print(f"llmguard run: stopped at --max-cost: {spend(budget, len(outcome.not_sent))}. "
              f"The next line could pass the cap at batch prices. Continue the "
              f"{len(outcome.not_sent):,} lines not sent with a new cap:\n  llmguard run "
              f"{resume_args(argv, new_cap=True)}", file=sys.stderr)
        return EXIT_BUDGET
    if deferred:  # --batch-fallback online: through the normal stack and quota
        from .run import run

        again = {i for i in lines if i not in {r.id for r in deferred}} | skip
        left = None if budget is None else max(s.max_cost - budget.statistics().spent_usd, 1e-9)
        return await run(replace(s, resume=True, max_cost=left), again, argv, total=total)
    return EXIT_FAILED if failed or invalid else EXIT_OK


def _bar(total: int, enabled: bool | None) -> Any:
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="line", desc="batch", file=sys.stderr)


def _summary(s: Settings, run: BatchRun, *, ok: int, failed: int, invalid: int, skipped: int,
             bill: Bill, wall: float, deferred: int, budget: str | None) -> str:
    rows = [
        ("lines", f"{ok + failed + invalid} done: {ok} ok, {failed + invalid} failed"
                  + (f"; {skipped} already done (resumed)" if skipped else "")
                  + (f"; {deferred} sent online next (--batch-fallback online)" if deferred
                     else "")),
        ("batches", f"{run.created} created, {run.adopted} collected from an earlier run, "
                    f"{run.resent} lines resent, {run.requeued} requeued (enqueued-token limit)"),
        ("cost", bill.summary()),
        *([("budget", budget)] if budget is not None else []),
        ("wall time", f"{wall:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    head = f"llmguard run --batch-api: {s.input} -> {s.output}"
    return "\n".join([head, *(f"  {name:<{width}}  {value}" for name, value in rows)])
