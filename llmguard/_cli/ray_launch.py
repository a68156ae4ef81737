"""``llmguard run --ray``: the same job through :func:`llmguard.integrations.ray.run_jsonl`."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import replace
from typing import Any

from .._upstream.deployments import DeploymentConfig
from .checks import usage_error
from .report import resume_args
from .run import stack_spec

__all__ = ["Secret", "ray_parts", "ray_send", "run_on_ray"]


class Secret:
    """An API key on its way to the actors: pickled with the provider factory, never shown
    (its ``repr`` is what Ray prints of a failed actor's arguments)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret('***')"


def ray_send(api_base: str | None, key_env: str = "OPENAI_API_KEY",
             key: Secret | None = None, deployments: tuple[DeploymentConfig, ...] = (),
             keys: dict[str, Secret] | None = None, timeout: float | None = None) -> Any:
    """The provider of ``llmguard run``, built in each Ray actor, bounding each attempt by
    ``timeout`` (``--timeout``) as the local run's does.

    The key is the one the driver resolved as the local run does (``--api-key``, else the
    driver's ``$key_env``); when the driver has none, the actor's own ``$key_env`` (a cluster
    whose workers hold the key). Each of ``deployments`` likewise: ``keys[name]`` from the
    driver's ``$api_key_env``, else the actor's.
    """
    from .provider import Provider

    if api_base or any(d.base_url for d in deployments):  # now, not on the first call,
        import aiohttp  # noqa: F401                      # which the rate limit has admitted

    found = {name: secret.value for name, secret in (keys or {}).items()}
    return Provider(api_base, key.value if key is not None else os.environ.get(key_env) or None,
                    timeout=timeout, deployments=deployments, keys=found)


def _key(args: argparse.Namespace) -> Secret | None:
    value = args.api_key if args.api_key is not None else os.environ.get(args.api_key_env)
    return Secret(value) if value else None


def _keys(deployments: tuple[DeploymentConfig, ...]) -> dict[str, Secret]:
    """Each deployment's key, from the driver's environment (where it has one)."""
    return {d.name: Secret(value) for d in deployments
            if d.api_key_env and (value := os.environ.get(d.api_key_env))}


def ray_parts(args: argparse.Namespace) -> tuple[Any, Any]:
    """The actors' pipeline factory and provider factory. As in the local run, no Timeout
    layer: the provider times each attempt (``--timeout`` from the send or, while the upstream
    answers ours sent before it, from the last of those: a Timeout layer, timing from the send
    alone, expired attempts queued at a proxy, which counted them again when retried)."""
    from ..integrations.ray import Stack

    stack = Stack(replace(stack_spec(args), timeout=None),
                  share=1 if args.redis else args.actors, deployments=args.deployments,
                  strategy=args.strategy)
    return stack, functools.partial(ray_send, args.api_base, args.api_key_env, _key(args),
                                    args.deployments, _keys(args.deployments),
                                    timeout=args.timeout)


def run_on_ray(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the parsed ``llmguard run --ray`` command line; returns the exit code."""
    for option, used in (("--metrics-port", args.metrics_port is not None),
                         ("--grace", args.grace != 5.0),
                         ("--input-tpm", args.input_tpm is not None),
                         ("--output-tpm", args.output_tpm is not None)):
        if used:
            return usage_error(f"{option} is not supported with --ray")
    try:
        from ..integrations.ray import run_jsonl

        stack, make_send = ray_parts(args)
        summary = run_jsonl(
            args.input, args.output, address=args.ray or None, actors=args.actors,
            pipeline=stack, make_send=make_send,
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
