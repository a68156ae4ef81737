"""The ``llmguard serve`` command line (argparse only: building the parser imports no server)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Serve an OpenAI-compatible API (POST /v1/chat/completions with streaming, POST /v1/embeddings,
GET /v1/models, GET /v1/usage, background jobs under /v1/jobs with SSE progress and signed
webhooks, the /v1/ws WebSocket, the /jobs status page, GET /metrics, /healthz, /readyz) that
runs every request through llmguard's layers: per-tenant quotas and priorities, then each
model's cache, fallbacks, retries, circuit breaker, timeout, rate limit and concurrency limit.

With no --config it serves the offline fake models (fake, fake-fail, fake-429) to anyone on
127.0.0.1, so `llmguard serve` works the moment it is installed:

  curl http://127.0.0.1:8787/v1/chat/completions -H 'content-type: application/json' \\
       -d '{"model": "fake", "messages": [{"role": "user", "content": "hi"}]}'
"""

_EPILOG = """\
config (TOML): [server] grace, max_body_bytes, allow_origins, public_metrics, metrics_key_env,
header_timeout, write_timeout, max_connections; [models.NAME] provider = "fake" | "litellm" |
"openai" with model, base_url, api_key_env, and layers rpm, tpm, input_tpm, output_tpm,
concurrency | adaptive, retries, timeout, fallbacks, cache_ttl, circuit_breaker, max_wait,
price_input/price_output (USD per 1M tokens); one model over several deployments:
[[models.NAME.deployments]] name, provider, model, base_url, api_key_env, rpm, tpm, refill,
concurrency, weight, timeout (routed by headroom; strategy = "headroom" | "weighted" |
"least_latency" | "ordered"); [tenants.NAME] api_key_sha256 (see --hash-key) or api_key_env,
rpm, tpm, concurrency, priority, max_priority, models, webhook_secret_env; [jobs] concurrency,
max_lines, max_body_bytes, ttl, reclaim_after, default_model, webhook_secret_env,
webhook_timeout, webhook_retry_for, allow_private_callbacks, max_jobs_per_tenant.

exit codes: 0 stopped (SIGTERM or Ctrl-C, after the grace period); 2 bad option or config
(the message names the key and its line).
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0 picks a free port), got {value}")
    return value


def _positive(kind: Any) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= (1 if kind is int else 0) or value != value:
            raise argparse.ArgumentTypeError(f"must be {'>= 1' if kind is int else '>= 0'}, "
                                             f"got {text}")
        return value
    return parse


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to the ``llmguard`` parser's subparsers."""
    serve = commands.add_parser(
        "serve", help="serve an OpenAI-compatible gateway guarded by llmguard",
        description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--config", metavar="FILE", help="TOML config (default: the fake models)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on "
                       "(default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8787, help="port (default: 8787; 0: free)")
    serve.add_argument("--redis", metavar="URL", help="share quotas, concurrency, circuit and "
                       "cache with every gateway on this Redis (redis://host:6379/0)")
    serve.add_argument("--redis-prefix", default="llmguard-serve", metavar="PREFIX",
                       help="key prefix in Redis (default: llmguard-serve)")
    serve.add_argument("--workers", type=_positive(int), default=1,
                       help="worker processes (default: 1; more needs --redis to share limits)")
    serve.add_argument("--grace", type=_positive(float), metavar="SECONDS",
                       help="on SIGTERM, seconds for requests in flight (default: config, 10)")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="a browser origin (https://app.example) a gateway without tenants "
                            "accepts besides loopback ones (repeatable; * for any)")
    serve.add_argument("--public-metrics", action="store_true",
                       help="serve /metrics without a key on a gateway with tenants (default: "
                            "it asks for the key in [server] metrics_key_env)")
    serve.add_argument("--log-level", default="warning",
                       choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--hash-key", action="store_true",
                       help="read an API key on standard input, print its sha256 for "
                            "api_key_sha256, and exit")
    return serve


def run(args: argparse.Namespace) -> int:
    """Start the server (imports starlette and uvicorn only now)."""
    try:
        from .server import main
    except ImportError as exc:
        print(f"llmguard serve: error: the gateway needs the serve extra: "
              f"pip install 'llmguard[serve]' ({exc})", file=sys.stderr)
        return 2
    return main(args)
