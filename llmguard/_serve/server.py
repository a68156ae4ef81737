"""Run the gateway on uvicorn: one process or ``--workers N``, and a graceful SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and closes idle keep-alive ones; the
gateway then answers 503 to any new request on a busy connection, ``/readyz`` fails, and the
requests and streams in flight get ``grace`` seconds: whatever is still running then ends with
an answer (a 503, or a final error event and ``[DONE]`` in a stream), never a cut connection.
uvicorn's own hard limit is set a little later, as the last resort. The process exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import signal
import sys
from typing import Any

import uvicorn

from .config import ConfigError, ServeConfig, default_config, load
from .gateway import Gateway

__all__ = ["configured_tracer_provider", "create_app", "main", "make_app"]

#: Settings for worker processes (``--workers``), which build their app from this variable.
_ENV = "LLMGUARD_SERVE_SETTINGS"
#: Gateways built in this process, drained when a shutdown signal arrives.
_LIVE: list[Gateway] = []
EXIT_OK, EXIT_USAGE = 0, 2
#: Middle-generation collections per full one in a serving process (CPython's default: 10).
FULL_COLLECTION_EVERY = 100


def make_app(config: ServeConfig, *, redis_url: str | None = None,
             redis_prefix: str = "llmguard-serve", tracer_provider: Any = None) -> Any:
    """The Starlette app for ``config`` (its gateway is ``app.state.gateway``); with a
    ``tracer_provider`` every request gets a span, and one per attempt at the upstream."""
    from .app import build_app, metrics_provider
    from .connections import set_limits

    set_limits(config.header_timeout, config.max_connections)
    provider, registry = metrics_provider()
    gateway = Gateway(config, redis_url=redis_url, redis_prefix=redis_prefix,
                      meter_provider=provider, tracer_provider=tracer_provider)
    _LIVE.append(gateway)
    return build_app(gateway, registry)


def configured_tracer_provider() -> Any:
    """The process's OpenTelemetry tracer provider when an SDK one is installed (e.g. by
    ``opentelemetry-instrument``), else None: no spans, and no per-request cost for them."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    return provider if type(provider).__module__.startswith("opentelemetry.sdk") else None


def create_app() -> Any:
    """uvicorn's app factory in a worker process: the settings come from the parent."""
    settings = json.loads(os.environ[_ENV])
    config = configure(load(settings["config"]) if settings["config"] else default_config(),
                       settings)
    app = make_app(config, redis_url=settings["redis"], redis_prefix=settings["prefix"],
                   tracer_provider=configured_tracer_provider())
    _chain_signals()
    tune_gc()
    return app


def tune_gc() -> None:
    """Keep the garbage collector's full collections off the p99 of the serving process.

    What is alive once the app is built (modules, classes, the config, the layers: some
    50,000 objects) is frozen: a full collection walked all of it every second or two under
    load, 25-80 ms on the serving thread that every request in flight waited out. What then
    remains in the oldest generation is mostly the rate limits' log entries (one per admission
    and quota, kept until folded or out of the window), which pass through it at the request
    rate and set a full collection off every ~1,200 requests; one in 100 of the middle
    generation's collections instead of one in 10 makes those (5-20 ms each) ten times rarer.
    Called once per serving process, after startup."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, max(old, FULL_COLLECTION_EVERY))


def configure(config: ServeConfig, options: dict[str, Any]) -> ServeConfig:
    """``config`` with the command line's overrides (``--grace``, ``--allow-origin``,
    ``--public-metrics``)."""
    changes: dict[str, Any] = {}
    if options.get("grace") is not None:
        changes["grace"] = options["grace"]
    if options.get("allow_origin"):
        changes["allow_origins"] = (*config.allow_origins, *options["allow_origin"])
    if options.get("public_metrics"):
        changes["public_metrics"] = True
    return dataclasses.replace(config, **changes) if changes else config


def _chain_signals() -> None:
    """In a worker: drain on SIGTERM/SIGINT, then let uvicorn's own handler shut down.

    A worker runs uvicorn's stock ``Server`` (the supervisor builds it in the child), whose
    handlers are installed before the app is loaded; wrapping them here is the one place to
    learn of the signal in time to drain."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(number: int, frame: Any, previous: Any = previous) -> None:
            for gateway in _LIVE:
                loop.call_soon_threadsafe(gateway.drain)
            if callable(previous):
                previous(number, frame)

        signal.signal(sig, handler)


class Server(uvicorn.Server):
    """uvicorn's server, draining the gateway as soon as a shutdown signal arrives.

    Used for a single process; with ``--workers`` each worker runs uvicorn's own server and
    ``create_app`` hooks the signals instead.
    """

    async def startup(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if not self.should_exit and self.config.workers <= 1:
            for server in self.servers:
                host, port = server.sockets[0].getsockname()[:2]
                print(f"llmguard serve: listening on http://{host}:{port}/v1", flush=True)
            tune_gc()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed():
            for gateway in _LIVE:
                loop.call_soon_threadsafe(gateway.drain)


def _banner(config: ServeConfig, args: Any) -> None:
    models = ", ".join(config.models)
    print(f"llmguard serve: models {models}; "
          + (f"{len(config.tenants)} tenants" if config.tenants else "no tenants configured, so "
             "requests need no API key") + ("; state shared in Redis" if args.redis else ""),
          file=sys.stderr, flush=True)
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    if not config.tenants and not loopback:
        print(f"llmguard serve: warning: listening on {args.host} with no tenants: anyone who "
              "can reach it may use the models; configure [tenants]", file=sys.stderr)
    if args.workers > 1 and not args.redis:
        print("llmguard serve: warning: without --redis each worker keeps its own quotas, "
              "limits, circuit and cache; pass --redis URL to share them", file=sys.stderr)


def main(args: Any) -> int:
    """``llmguard serve`` with parsed arguments; returns the exit code."""
    if args.hash_key:
        key = sys.stdin.readline().strip()
        if not key:
            print("llmguard serve: error: --hash-key reads the key from standard input",
                  file=sys.stderr)
            return EXIT_USAGE
        from .tenants import hash_key

        print(hash_key(key))
        return EXIT_OK
    try:
        config = configure(load(args.config) if args.config else default_config(), vars(args))
        # Built once here so a bad tenant key variable fails now, with exit 2, not in a worker.
        app = make_app(config, redis_url=args.redis, redis_prefix=args.redis_prefix,
                       tracer_provider=configured_tracer_provider())
    except ConfigError as exc:
        print(f"llmguard serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:
        print(f"llmguard serve: error: {exc}; pip install 'llmguard[serve]'", file=sys.stderr)
        return EXIT_USAGE
    _banner(config, args)
    from .connections import GuardedHTTP

    # A WebSocket message is a request body: the same limit (plus its envelope).
    common = dict(host=args.host, port=args.port, lifespan="on", log_level=args.log_level,
                  access_log=args.access_log, timeout_graceful_shutdown=config.grace + 2,
                  http=GuardedHTTP, ws_max_size=config.max_body_bytes + 65536)
    stopped = []
    for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn re-raises the signal once done
        signal.signal(sig, lambda s, _f: stopped.append(s))
    if args.workers <= 1:
        Server(uvicorn.Config(app, **common)).run()
        return EXIT_OK
    _LIVE.clear()  # the parent only validated; each worker builds its own gateway
    os.environ[_ENV] = json.dumps({"config": args.config, "redis": args.redis,
                                   "prefix": args.redis_prefix, "grace": args.grace,
                                   "allow_origin": args.allow_origin,
                                   "public_metrics": args.public_metrics})
    config_ = uvicorn.Config("llmguard._serve.server:create_app", factory=True,
                             workers=args.workers, **common)
    sock = config_.bind_socket()
    host, port = sock.getsockname()[:2]
    print(f"llmguard serve: listening on http://{host}:{port}/v1 ({args.workers} workers)",
          flush=True)
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config_, sockets=[sock]).run()
    return EXIT_OK
