"""The options of ``llmguard run --batch-api``: arguments, their checks, where the ledger lives."""

from __future__ import annotations

import argparse
import os

from .._upstream.batches.ledger import FileLedger
from .checks import number_type
from .run import Settings

__all__ = ["BatchOptions", "add_arguments", "batch_options_without_batch_api", "batch_problem",
           "ledger_path"]


def add_arguments(run: argparse.ArgumentParser) -> None:
    """The ``--batch-api`` options of ``llmguard run``."""
    batch = run.add_argument_group("provider batch API (half price, answers within 24 h)")
    batch.add_argument("--batch-api", action="store_true",
                       help="send the lines through the provider's batch API instead of one by "
                            "one: same records, batch prices; a ledger beside OUTPUT makes "
                            "--resume collect submitted batches instead of paying twice")
    batch.add_argument("--provider", choices=("openai", "anthropic"), default="openai",
                       help="with --batch-api: OpenAI's Batch API (default; any compatible "
                            "--api-base) or Anthropic's Message Batches (key from "
                            "ANTHROPIC_API_KEY unless --api-key-env says otherwise)")
    batch.add_argument("--batch-fallback", choices=("batch", "online"), default="batch",
                       help="lines that failed or expired in a batch: sent once more in a new "
                            "batch (default) or online through the normal stack and quotas")
    batch.add_argument("--enqueued-tokens", type=number_type(int), metavar="TOKENS",
                       help="the provider's enqueued-token limit per model: batches beyond it "
                            "wait for earlier ones to end instead of failing")
    batch.add_argument("--poll", type=number_type(float, unit=" seconds"), default=5.0,
                       metavar="SECONDS",
                       help="first poll interval, doubling to 60 s while nothing changes "
                            "(default: 5)")
    batch.add_argument("--cancel-on-interrupt", action="store_true",
                       help="on Ctrl-C, cancel the submitted batches at the provider instead of "
                            "leaving them running for --resume to collect")


def batch_options_without_batch_api(args: argparse.Namespace) -> str | None:
    """A usage error when a batch option is given without ``--batch-api``, or ``--batch-api``
    with ``--ray`` or with several deployments (a batch goes to one provider's batch API;
    routing batches over deployments' quotas is not built)."""
    if args.batch_api:
        if args.ray is not None:
            return "--batch-api does not go with --ray: the provider runs the batch"
        if args.deployments:
            return ("--batch-api sends the lines to one provider's batch API: it does not go "
                    "with several --api-base or --config deployments; give one --api-base (run "
                    "once per deployment for several), or drop --batch-api to route online")
        return None
    if (args.provider != "openai" or args.batch_fallback != "batch"
            or args.enqueued_tokens is not None or args.cancel_on_interrupt):
        return ("--provider, --batch-fallback, --enqueued-tokens and --cancel-on-interrupt go "
                "with --batch-api")
    return None


def ledger_path(output: str) -> str:
    """Where the batch ledger of ``output`` lives."""
    return f"{output}.batches.jsonl"


class BatchOptions:
    """The ``--batch-api`` options besides the run's :class:`Settings`."""

    __slots__ = ("cancel_on_interrupt", "enqueued_tokens", "fallback", "max_poll", "poll",
                 "provider")

    def __init__(self, *, provider: str = "openai", fallback: str = "batch",
                 enqueued_tokens: int | None = None, poll: float = 5.0, max_poll: float = 60.0,
                 cancel_on_interrupt: bool = False) -> None:
        self.provider, self.fallback = provider, fallback
        self.enqueued_tokens = enqueued_tokens
        self.poll, self.max_poll = poll, max_poll
        self.cancel_on_interrupt = cancel_on_interrupt

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BatchOptions:
        return cls(provider=args.provider, fallback=args.batch_fallback,
                   enqueued_tokens=args.enqueued_tokens, poll=args.poll,
                   cancel_on_interrupt=args.cancel_on_interrupt)


def batch_problem(s: Settings, options: BatchOptions) -> str | None:
    """Why these options cannot run through a batch API (None when they can)."""
    if s.output == "-":
        return "--batch-api needs an output file (-o OUT): its ledger lives beside it"
    if s.model is None and s.api_base is None:
        return ("--batch-api sends to a provider: pass --model (and --api-base for an "
                "OpenAI-compatible server); the offline fake model has no batch API")
    if not s.resume and os.path.exists(ledger_path(s.output)):
        earlier = FileLedger(ledger_path(s.output))
        live = earlier.live()
        earlier.close()
        if live:
            return (f"{ledger_path(s.output)} lists {len(live)} batch(es) of an earlier run not "
                    "yet collected: pass --resume to collect them (nothing is submitted twice), "
                    "or delete that file to forget them")
        os.remove(ledger_path(s.output))
    return None
