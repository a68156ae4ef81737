"""``llmguard run --ray``: the same job through :func:`llmguard.integrations.ray.run_jsonl`."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any

from .checks import usage_error
from .run import resume_args

__all__ = ["ray_send", "run_on_ray"]


def ray_send(api_base: str | None) -> Any:
    """The provider of ``llmguard run``, built in each Ray actor (the API key is read there)."""
    from .provider import Provider

    if api_base:  # imported now, not on the first call, which the rate limit has admitted
        import aiohttp  # noqa: F401

    return Provider(api_base, os.environ.get("OPENAI_API_KEY"))  # read on the actor: never shipped


def run_on_ray(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the parsed ``llmguard run --ray`` command line; returns the exit code."""
    for option, used in (("--metrics-port", args.metrics_port is not None),
                         ("--grace", args.grace != 5.0)):
        if used:
            return usage_error(f"{option} is not supported with --ray")
    try:
        from ..integrations.ray import Stack, run_jsonl

        stack = Stack(rpm=args.rpm, tpm=args.tpm, burst=args.burst, margin=args.margin,
                      concurrency=args.concurrency, adaptive=args.adaptive,
                      retries=args.retries, timeout=args.timeout,
                      fallback_models=tuple(args.fallback_model), cache_ttl=args.cache_ttl,
                      share=1 if args.redis else args.actors)
        summary = run_jsonl(
            args.input, args.output, address=args.ray or None, actors=args.actors,
            pipeline=stack, make_send=functools.partial(ray_send, args.api_base),
            redis_url=args.redis, resume=args.resume, retry_failed=args.retry_failed,
            overwrite=args.overwrite, ordered=not args.unordered, model=args.model,
            default_model="fake", priority_field=args.priority_field,
            progress=bool(args.progress), verbose=args.verbose,
        )
    except ImportError as exc:
        return usage_error(f"--ray needs the ray extra: pip install 'llmguard[ray]' ({exc})")
    except (TypeError, ValueError) as exc:
        return usage_error(str(exc))
    if not summary.complete:
        print(f"Resume with:\n  llmguard run {resume_args(argv[1:])}", file=sys.stderr)
    return summary.exit_code
