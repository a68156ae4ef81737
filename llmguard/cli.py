"""``llmguard run``: push a JSONL file of chat requests through the full llmguard stack.

    llmguard run examples/prompts.jsonl -o out.jsonl --rpm 500 --tpm 200000 --retries 4

The options parse and validate here; the run itself is in ``_cli/run`` (pipeline, resume,
signals), input and output in ``_cli/io``, the provider in ``_cli/provider``, the progress bar
and summary in ``_cli/report``, path and URL checks in ``_cli/checks``, ``--ray`` in
``_cli/ray_launch``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

import llmguard

from ._cli import batch_options, budget_options, deployments
from ._cli.checks import api_base_problem, number_type, output_problem, same_file
from ._cli.checks import usage_error as _fail
from ._cli.io import done_ids, scan_input
from ._cli.loop import run_main
from ._cli.exits import EXIT_CRASH
from ._cli.run import Settings, make_limits, run, stack_spec
from ._cli.usage import DESCRIPTION, EPILOG
from ._core.redact import hide_secrets, redact

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmguard", description="Concurrency control for LLM calls, from the command line."
    )
    parser.add_argument("--version", action="version",
                        version=f"llmguard {getattr(llmguard, '__version__')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run", help="run a JSONL file of chat requests through the full stack",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("input", metavar="INPUT", help="JSONL file of chat requests")
    run.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                     help="JSONL file to write one record per input line to ('-': stdout, "
                          "with the summary on stderr)")
    run.add_argument("--model", help='override every line\'s model (default: the line\'s, '
                                     'else "fake")')
    deployments.add_arguments(run)
    group = run.add_argument_group("layers")
    group.add_argument("--rpm", type=number_type(int), action="append",
                       help="requests per minute quota (default: learned from the provider's "
                            "x-ratelimit-limit-* headers; waiting for quota never fails a line)")
    group.add_argument("--tpm", type=number_type(int), action="append",
                       help="tokens per minute quota (prompt estimate + max_tokens, charged at "
                            "admission and never given back, as OpenAI counts them)")
    group.add_argument("--input-tpm", type=number_type(int), action="append",
                       help="input tokens per minute, apart from output (Anthropic's ITPM)")
    group.add_argument("--output-tpm", type=number_type(int), action="append",
                       help="output tokens per minute (Anthropic's OTPM): unused ones come back")
    group.add_argument("--burst", type=number_type(float), metavar="FRACTION",
                       help="also hold each quota over that fraction of its minute (0.1: a "
                            "tenth of --rpm per 6 s), for providers that enforce quotas over "
                            "short windows")
    group.add_argument("--refill", choices=("auto", "window", "continuous"),
                       help="how the provider refills its quota: 'auto' (default: paced like "
                            "the provider's own limiter, its shape learned from its headers and "
                            "429s, safe with any until then), 'window' (never more than the "
                            "quota in any minute) or 'continuous' (a bucket refilling every "
                            "instant, as OpenAI, Azure OpenAI and Anthropic do)")
    group.add_argument("--margin", type=number_type(float, strict=False, unit=" seconds"),
                       default=None, metavar="SECONDS",
                       help="count each request against the quotas this much longer than the "
                            "provider's window, so admission and the provider's clock never "
                            "disagree at the window's edge (default: measured from the answers, "
                            "the round trip less the provider's own time; 0.5 per minute until "
                            "then, as RateLimit's)")
    limit = group.add_mutually_exclusive_group()
    limit.add_argument("--concurrency", type=number_type(int),
                       help="calls in flight at once (default: the requests quota per minute, "
                            "given or learned, from 16 to 1024)")
    limit.add_argument("--adaptive", action="store_true",
                       help="find the provider's concurrency limit from latency and errors")
    group.add_argument("--retries", type=number_type(int, strict=False), default=3,
                       help="retries per line after the first attempt, with backoff that "
                            "honours Retry-After; 0 disables (default: 3)")
    group.add_argument("--timeout", type=number_type(float, unit=" seconds"), default=60.0,
                       help="seconds per attempt at the provider, from when it is sent (time "
                            "waiting for quota or a slot does not count; default: 60)")
    group.add_argument("--fallback-model", action="append", default=[], metavar="MODEL",
                       help="model to try when a line's model fails after its retries "
                            "(repeatable, tried in order)")
    group.add_argument("--cache-ttl", type=number_type(float, unit=" seconds"), metavar="SECONDS",
                       help="answer identical requests from a cache for this long")
    budget_options.add_arguments(group)
    group.add_argument("--priority-field", metavar="FIELD",
                       help="top-level field of each line holding its priority (higher first); "
                            "removed from the request")
    runs = run.add_argument_group("run")
    runs.add_argument("--unordered", action="store_true",
                       help="write records as they finish instead of in input order")
    resume = runs.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue an interrupted run: skip lines whose id is in OUTPUT")
    resume.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    runs.add_argument("--retry-failed", action="store_true",
                      help="with --resume, also run again the lines whose record is an error "
                           "(their error records are removed)")
    runs.add_argument("--grace", type=number_type(float, strict=False, unit=" seconds"),
                      default=5.0,
                      help="on Ctrl-C, seconds to let lines in flight finish (default: 5)")
    runs.add_argument("--metrics-port", type=number_type(int, maximum=65535), metavar="PORT",
                      help="serve Prometheus metrics on 127.0.0.1:PORT while running")
    bar = runs.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None,
                     help="force the progress bar (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar")
    runs.add_argument("-v", "--verbose", action="store_true",
                      help="log one line per finished record to stderr")
    runs.add_argument("--format", choices=("llmguard", "openai-batch"), default="llmguard",
                      help="output records: llmguard's (default) or the Batch API's output shape "
                           "{id, custom_id, response, error}, written once the run completes")
    batch_options.add_arguments(run)
    ray = run.add_argument_group("ray (pip install 'llmguard[ray]')")
    ray.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run the lines on Ray actors: on the cluster at ADDRESS (e.g. "
                          "ray://head:10001 or auto), else on a local Ray; same records, "
                          "same --resume")
    ray.add_argument("--actors", type=number_type(int), default=2,
                     help="with --ray, the number of actors (default: 2)")
    ray.add_argument("--redis", metavar="URL",
                     help="with --ray, share the quotas, the concurrency limit and the cache "
                          "of every actor through this Redis, and keep answered lines there "
                          "so a dead actor's batch is not paid twice (without it each actor "
                          "gets 1/--actors of --rpm, --tpm and --concurrency)")
    from ._serve import options as serve_options  # argparse only: no server is imported

    serve_options.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmguard`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)  # exits 2 with a message naming the option on bad input
    if args.command == "serve":
        from ._serve import options as serve_options

        return serve_options.run(args)

    # The exact keys it may hold, whatever their shape, never in what it writes, prints or logs.
    hide_secrets(args.api_key, *(os.environ.get(v) for v in args.api_key_env or ()),
                 os.environ.get(deployments.DEFAULT_KEY_ENV))
    if (problem := deployments.resolve(args)) is not None:
        return _fail(problem)
    if not os.path.isfile(args.input):
        return _fail(f"input file {args.input!r} does not exist (or is not a file)")
    total, duplicates = scan_input(args.input)
    if not total:
        return _fail(f"input file {args.input!r} has no requests (it is empty or blank); "
                     "pass a JSONL file with one chat request per line")
    if duplicates:
        shown = "; ".join(f"{i!r} on lines {', '.join(map(str, lines))}"
                          for i, lines in list(duplicates.items())[:5])
        return _fail(f"{len(duplicates)} ids are used by more than one line ({shown}); each "
                     "custom_id must be unique, or --resume would skip the later lines")
    stdout = args.output == "-"
    if stdout and args.resume:
        return _fail("--resume needs an output file to read (not -o -)")
    if not stdout and same_file(args.input, args.output):
        return _fail("OUTPUT must differ from INPUT (they are the same file)")
    if args.api_base is not None or any(d.base_url for d in args.deployments):
        if args.api_base is not None and (problem := api_base_problem(args.api_base)):
            return _fail(problem)
        if args.model is None and not (args.deployments
                                       and all(d.model for d in args.deployments)):
            return _fail("--api-base needs --model: the model name the server serves (lines "
                         "without one would otherwise go to the offline fake)")
    if args.burst is not None and not args.deployments and {
            args.rpm, args.tpm, args.input_tpm, args.output_tpm} == {None}:
        return _fail("--burst shapes the --rpm/--tpm quotas: pass one of them too")
    if args.retry_failed and not args.resume:
        return _fail("--retry-failed needs --resume (it redoes failed lines of OUTPUT)")
    if not stdout:
        exists = os.path.isfile(args.output) and os.path.getsize(args.output) > 0
        # Probe it can be written, leaving no file behind (a later usage error must not).
        if (problem := output_problem(args.output, append=False)) is not None:
            return _fail(problem)
        if exists and not (args.resume or args.overwrite):
            return _fail(f"output {args.output!r} exists: pass --resume to continue that "
                         "run or --overwrite to start again")
    if (problem := budget_options.budget_problem(args)
            or batch_options.batch_options_without_batch_api(args)) is not None:
        return _fail(problem)
    if args.ray is not None:
        if stdout:
            return _fail("-o - does not go with --ray: give an output file")
        from ._cli.ray_launch import run_on_ray

        return run_on_ray(args, argv)
    if args.redis is not None or args.actors != 2:
        return _fail("--redis and --actors go with --ray")
    key_env = args.api_key_env
    if args.provider == "anthropic" and key_env == "OPENAI_API_KEY":  # the default: Anthropic's
        key_env = "ANTHROPIC_API_KEY"
    api_key = args.api_key if args.api_key is not None else os.environ.get(key_env)
    try:
        stack = stack_spec(args)
    except (TypeError, ValueError) as exc:
        return _fail(str(exc))
    settings = Settings(
        input=args.input, output=args.output, model=args.model, api_base=args.api_base,
        deployments=args.deployments, strategy=args.strategy,
        stack=stack, priority_field=args.priority_field, ordered=not args.unordered,
        resume=args.resume, grace=args.grace, metrics_port=args.metrics_port,
        progress=args.progress, verbose=args.verbose, api_key=api_key or None, format=args.format,
        max_cost=args.max_cost, price=args.price, follow_quota=args.concurrency is None)
    if args.metrics_port is not None:
        # Before the pipeline exists, so its Metrics layer records into this exporter.
        try:
            from . import serve_metrics  # type: ignore[attr-defined]

            serve_metrics(port=args.metrics_port)
        except ImportError as exc:
            return _fail(f"--metrics-port needs the otel extra: pip install 'llmguard[otel]' "
                         f"({exc})")
        except OSError as exc:
            return _fail(f"--metrics-port {args.metrics_port}: cannot listen there ({exc}); "
                         "pick a free port")
    try:
        make_limits(settings)  # a layer rejecting an option says so here, before anything runs
        skip, failed_before = (done_ids(args.output, redo_failed=args.retry_failed)
                               if args.resume else (set(), 0))
    except ValueError as exc:  # a layer rejecting an option, or an unusable --resume file
        return _fail(str(exc))
    if args.batch_api:
        from ._cli.batch_api import run_batch_api

        options = batch_options.BatchOptions.from_args(args)
        if (problem := batch_options.batch_problem(settings, options)) is not None:
            return _fail(problem)
        main_job = run_batch_api(settings, options, skip, argv[1:], total=total)
    else:
        main_job = run(settings, skip, argv[1:], total=total, failed_before=failed_before)
    try:
        return run_main(main_job)
    except Exception:  # a bug: say so, and keep "some lines failed" (1) meaning just that
        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        print(f"llmguard run crashed (a bug; please report it). The records in {args.output} "
              "are intact: --resume continues from them.", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
