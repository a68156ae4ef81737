"""``llmguard run`` over several deployments of one model, routed by a :class:`llmguard.Router`.

Two ways in, one result (a tuple of the gateway's ``DeploymentConfig``):

* repeated ``--api-base URL`` (the simple case): the i-th ``--api-key-env``, ``--rpm``,
  ``--tpm``, ``--input-tpm`` and ``--output-tpm`` belong to the i-th ``--api-base`` (each given
  once per ``--api-base``, or never: the default key variable, quotas learned from each
  deployment's headers); ``--refill``, ``--burst`` and ``--margin`` apply to every one;
* ``--config FILE``: a TOML file of ``[[deployments]]`` tables, the schema and parser of the
  gateway's ``[[models.NAME.deployments]]`` (name, provider, base_url, api_key_env, model, rpm,
  tpm, input_tpm, output_tpm, concurrency, weight, timeout, refill, burst, margin).

:func:`resolve` checks the options together and leaves ``args`` as a run of one upstream sees
them (one ``api_base``, one ``api_key_env``, scalar quotas), with ``args.deployments`` set.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

from .._core.config_file import ConfigError
from .._upstream.deployments import DeploymentConfig, load_deployments
from .checks import api_base_problem

__all__ = ["PAIRED", "add_arguments", "resolve", "routed"]

#: Options given once per ``--api-base`` when there are several (flag, attribute).
PAIRED = (("--api-key-env", "api_key_env"), ("--rpm", "rpm"), ("--tpm", "tpm"),
          ("--input-tpm", "input_tpm"), ("--output-tpm", "output_tpm"))
#: The quota shape options: per deployment in a --config file, for every --api-base otherwise.
SHAPE = (("--burst", "burst"), ("--margin", "margin"), ("--refill", "refill"))
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def add_arguments(run: argparse.ArgumentParser) -> None:
    """Where the lines go: ``--api-base`` (repeatable), its key, ``--config``, ``--strategy``."""
    run.add_argument("--api-base", metavar="URL", action="append",
                     help="send every non-fake model to this OpenAI-compatible server (e.g. "
                          "http://localhost:8000/v1; needs --model) instead of through litellm; "
                          "repeat it to route the lines over several deployments of the model "
                          "(each with its --api-key-env, --rpm, --tpm, in the same order)")
    key = run.add_mutually_exclusive_group()
    key.add_argument("--api-key", metavar="KEY",
                     help="API key (bearer token for --api-base, api_key for litellm); prefer "
                          "--api-key-env, which keeps it out of shell history and ps")
    key.add_argument("--api-key-env", metavar="NAME", action="append",
                     help="environment variable holding the API key (default: OPENAI_API_KEY; "
                          "litellm also reads each provider's own, e.g. ANTHROPIC_API_KEY); "
                          "once per --api-base when there are several")
    group = run.add_argument_group("deployments (one model, several upstreams)")
    group.add_argument("--config", metavar="FILE",
                       help="route the lines over the deployments of this TOML file (one "
                            "[[deployments]] table each: name, provider, base_url, "
                            "api_key_env, model, rpm, tpm, concurrency, weight, timeout, "
                            "refill, burst, margin; the schema of llmguard serve's "
                            "[[models.NAME.deployments]]), each never sent more than its quota")
    group.add_argument("--strategy", choices=("headroom", "weighted", "least_latency", "ordered"),
                       help="with several deployments, which one with room takes a line: "
                            "'headroom' (default: the most free quota), 'weighted', "
                            "'least_latency', 'ordered' (the first, the rest take its overflow)")


def resolve(args: argparse.Namespace) -> str | None:
    """Check the deployment options together and set ``args.deployments`` (``()`` for one
    upstream) and ``args.strategy``; returns the problem, or None."""
    bases: list[str] = args.api_base or []
    args.deployments = ()
    if args.config is not None:
        problem = _from_file(args, bases)
    elif len(bases) > 1:
        problem = _from_pairs(args, bases)
    else:
        problem = _single(args)
    if problem is None and args.strategy is not None and not args.deployments:
        problem = "--strategy chooses among deployments: give several --api-base or --config"
    if problem is not None:
        return problem
    args.strategy = args.strategy or "headroom"
    args.api_base = bases[0] if len(bases) == 1 else None
    args.refill = args.refill or "auto"
    if not isinstance(args.api_key_env, str):
        keys = args.api_key_env or []
        args.api_key_env = keys[0] if len(keys) == 1 else DEFAULT_KEY_ENV
    return None


def _single(args: argparse.Namespace) -> str | None:
    """One upstream: each paired option at most once, as a scalar."""
    for flag, attr in PAIRED:
        values = getattr(args, attr) or []
        if len(values) > 1:
            return (f"{flag} is given {len(values)} times for one --api-base; give it once per "
                    "--api-base, in the same order, to route over several deployments")
        setattr(args, attr, values[0] if values else None)
    return None


def _from_pairs(args: argparse.Namespace, bases: list[str]) -> str | None:
    """Several --api-base: the i-th of each paired option goes with the i-th URL."""
    if args.api_key is not None:
        return ("--api-key is one key, and there are several --api-base: give each its own "
                "--api-key-env VAR, in the same order")
    columns: dict[str, list[Any]] = {}
    for flag, attr in PAIRED:
        values = getattr(args, attr) or []
        if values and len(values) != len(bases):
            return (f"{len(bases)} --api-base but {len(values)} {flag}: give {flag} once per "
                    f"--api-base, in the same order (or not at all"
                    + (", for the default OPENAI_API_KEY" if attr == "api_key_env" else
                       ", to learn each deployment's quota from its headers") + ")")
        columns[attr] = values or [None] * len(bases)
        setattr(args, attr, None)
    for url in bases:
        if (problem := api_base_problem(url)) is not None:
            return problem
    keys = columns["api_key_env"]
    names = [_name(url, key) for url, key in zip(bases, keys)]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        return (f"two --api-base name the same deployment {twice!r}: give each its own "
                "--api-key-env (a key of another organisation), or name them in a --config file")
    args.deployments = tuple(
        DeploymentConfig(name, provider="openai", base_url=url,
                         api_key_env=key or DEFAULT_KEY_ENV, rpm=rpm, tpm=tpm,
                         input_tpm=input_tpm, output_tpm=output_tpm,
                         refill=args.refill or "auto", burst=args.burst, margin=args.margin)
        for name, url, key, rpm, tpm, input_tpm, output_tpm in zip(
            names, bases, keys, *(columns[a] for a in ("rpm", "tpm", "input_tpm", "output_tpm"))))
    return None


def _name(url: str, key_env: str | None) -> str:
    """A deployment's name (its quotas' key in Redis, so the same for every process routing to
    it): the URL's host and port, with the key's variable when one was named."""
    host = urlsplit(url).netloc.rpartition("@")[2]  # never credentials in a URL
    return host if key_env is None else f"{key_env}@{host}"


def _from_file(args: argparse.Namespace, bases: list[str]) -> str | None:
    """--config FILE: the deployments are the file's; the options they hold are refused."""
    given = [flag for flag, attr in (*PAIRED, *SHAPE) if getattr(args, attr) is not None]
    given += ["--api-base"] * bool(bases) + ["--api-key"] * (args.api_key is not None)
    if given:
        return (f"{given[0]} goes in each [[deployments]] table of --config {args.config} "
                "(as api_key_env, rpm, tpm, base_url, refill, burst, margin)")
    try:
        args.deployments = load_deployments(args.config)
    except ConfigError as exc:
        return str(exc)
    for flag, attr in PAIRED:
        setattr(args, attr, None)
    return None


def routed(router: Any) -> str | None:
    """The summary's ``deployments`` row: what each deployment of the run's Router answered,
    its 429s and the attempts that moved away from it (None: not a Router)."""
    if not hasattr(router, "deployments"):
        return None
    parts = []
    for name, d in router.statistics().deployments.items():
        extra = ", ".join(f"{n:,} {what}" for n, what in (
            (d.rate_limited, "429s"), (d.moved_away, "moved away")) if n)
        parts.append(f"{name} {d.succeeded:,} answered" + (f" ({extra})" if extra else ""))
    return "; ".join(parts)
