"""The HTTP surface: OpenAI-compatible routes on Starlette, plus metrics, health and usage.

``POST /v1/chat/completions`` (JSON, or ``stream: true`` as SSE), ``POST /v1/embeddings``,
``GET /v1/models[/{id}]``, ``GET /v1/usage[/{tenant}]``; ``GET /metrics`` (Prometheus),
``/healthz`` (alive), ``/readyz`` (503 once draining). Every error has OpenAI's body shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import llmguard as lg

from .config import ConfigError
from .edge import Edge
from .errors import HTTPProblem, Redactor, error_json, from_exception
from .gateway import Gateway
from .sse import StreamBody, event, relay
from .tenants import Tenant
from .validate import read_json, validate_chat, validate_embeddings

__all__ = ["build_app"]

_JSON = "application/json"


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status, headers, _JSON)


def _as_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A complete answer (a Fallback default, say) as the one chunk of a stream."""
    choices = [{"index": c.get("index", 0), "delta": c.get("message", {}),
                "finish_reason": c.get("finish_reason")} for c in completion.get("choices", [])]
    return {**completion, "object": "chat.completion.chunk", "choices": choices}


def _priority(tenant: Tenant, request: Request) -> int:
    try:
        return tenant.priority(request.headers.get("x-priority"))
    except ValueError as exc:
        raise HTTPProblem(400, str(exc), "invalid_priority", param="X-Priority") from None


@contextlib.asynccontextmanager
async def _client_left(request: Request) -> AsyncIterator[asyncio.Event]:
    """An event set when the client disconnects (its whole body was read already, so the next
    ASGI message is the disconnect): a request it left before it was sent upstream is dropped
    (``Gateway.call(abandon=...)``) instead of paying the provider for an answer nobody reads."""
    left = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left.set()

    task = asyncio.get_running_loop().create_task(watch())
    try:
        yield left
    finally:
        task.cancel()


class Routes:
    """The route handlers over one :class:`Gateway`."""

    def __init__(self, gateway: Gateway, metrics_registry: Any = None) -> None:
        self.gateway = gateway
        self.registry = metrics_registry
        env = gateway.config.metrics_key_env
        #: The bearer key ``/metrics`` asks for on a gateway with tenants (None: none set).
        self.metrics_key = os.environ.get(env) or None if env else None
        if env and self.metrics_key is None:
            raise ConfigError(f"server.metrics_key_env: the environment variable {env} is not "
                              "set (or empty)")
        self.redact = Redactor([*gateway.secrets(), *([self.metrics_key] if self.metrics_key
                                                       else [])])

    def error(self, exc: BaseException, tenant: Tenant | None = None, model: str = "",
               extra: dict[str, str] | None = None) -> Response:
        status, body, headers = from_exception(exc, self.redact)
        if tenant is not None:
            self.gateway.usage.record(tenant, model, status)
        return Response(body, status, {**(extra or {}), **headers}, _JSON)

    def tenant_of(self, request: Request) -> Tenant:
        if self.gateway.draining:
            raise HTTPProblem(503, "the gateway is shutting down; retry on another replica",
                              "server_shutting_down", headers={"connection": "close",
                                                                "retry-after": "1"})
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("api-key")
        tenant = self.gateway.tenants.authenticate(key)
        if tenant is None:  # the message never repeats the key it got
            what = "no API key was given" if not key else "the API key is not valid"
            raise HTTPProblem(401, f"Unauthorized: {what}; send `Authorization: Bearer <key>`",
                              "invalid_api_key")
        return tenant

    async def chat(self, request: Request) -> Response:
        tenant: Tenant | None = None
        name = ""
        try:
            tenant = self.tenant_of(request)
            body = validate_chat(await read_json(request, self.gateway.config.max_body_bytes))
            name = body["model"]
            model = self.gateway.model_for(tenant, name)
            if model is None:
                raise HTTPProblem(404, f"The model {name!r} does not exist or you do not have "
                                  "access to it.", "model_not_found", param="model")
            priority = _priority(tenant, request)
            streaming = body.get("stream") is True
            wants_usage = False
            if streaming:  # always ask upstream for usage: the tenant's tokens are accounted
                options = body.get("stream_options") or {}
                wants_usage = options.get("include_usage") is True
                body["stream_options"] = {**options, "include_usage": True}
            async with _client_left(request) as left:
                result = await self.gateway.call(model, tenant, body, priority, abandon=left)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-style answer
            return self.error(exc, tenant, name)
        headers = self.gateway.tenants.headers(tenant)
        price = (model.config.price_input, model.config.price_output)
        book = self.gateway.usage
        if not isinstance(result, lg.Stream):
            book.record(tenant, name, 200, lg.extract_usage(result), price)
            if streaming:  # a non-streamed answer (a cache or default) sent as one chunk
                return StreamBody(self._one(result), headers=headers,
                                  media_type="text/event-stream",
                                  write_timeout=self.gateway.config.write_timeout)
            return _json(result, 200, headers)
        stream = result
        stream.defer(lambda error: book.record(
            tenant, name, 200 if error is None or not isinstance(error, Exception) else 500,
            stream.usage, price))
        body_iter = relay(stream, bounded=self.gateway.bounded, include_usage=wants_usage,
                          on_error=self._stream_error)
        return StreamBody(body_iter, headers={**headers, "cache-control": "no-cache"},
                          media_type="text/event-stream",
                          write_timeout=self.gateway.config.write_timeout)

    async def _one(self, completion: dict[str, Any]) -> AsyncIterator[bytes]:
        yield event(_as_chunk(completion))
        yield b"data: [DONE]\n\n"

    def _stream_error(self, exc: BaseException) -> bytes:
        status, body, _headers = from_exception(exc, self.redact)
        return b"data: " + body + b"\n\n"

    async def embeddings(self, request: Request) -> Response:
        tenant: Tenant | None = None
        name = ""
        try:
            tenant = self.tenant_of(request)
            body = validate_embeddings(
                await read_json(request, self.gateway.config.max_body_bytes))
            name = body["model"]
            model = self.gateway.model_for(tenant, name)
            if model is None:
                raise HTTPProblem(404, f"The model {name!r} does not exist or you do not have "
                                  "access to it.", "model_not_found", param="model")
            priority = _priority(tenant, request)
            async with _client_left(request) as left:
                result = await self.gateway.call(model, tenant, body, priority, embed=True,
                                                 abandon=left)
        except Exception as exc:  # noqa: BLE001
            return self.error(exc, tenant, name)
        price = (model.config.price_input, 0.0)
        self.gateway.usage.record(tenant, name, 200, lg.extract_usage(result), price)
        return _json(result, 200, self.gateway.tenants.headers(tenant))

    def _model_card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "llmguard"}

    async def models(self, request: Request) -> Response:
        try:
            tenant = self.tenant_of(request)
        except HTTPProblem as exc:
            return self.error(exc)
        names = [n for n in self.gateway.models if tenant.may_use(n)]
        return _json({"object": "list", "data": [self._model_card(n) for n in names]})

    async def model(self, request: Request) -> Response:
        try:
            tenant = self.tenant_of(request)
            name = request.path_params["model"]
            if self.gateway.model_for(tenant, name) is None:
                raise HTTPProblem(404, f"The model {name!r} does not exist or you do not have "
                                  "access to it.", "model_not_found", param="model")
        except HTTPProblem as exc:
            return self.error(exc)
        return _json(self._model_card(name))

    async def usage(self, request: Request) -> Response:
        try:
            tenant = self.tenant_of(request)
            asked = request.path_params.get("tenant", tenant.name)
            if asked != tenant.name:  # another tenant's usage: as if it did not exist
                raise HTTPProblem(404, f"No tenant {asked!r} is visible with this API key.",
                                  "not_found")
        except HTTPProblem as exc:
            return self.error(exc)
        return _json(await self.gateway.usage.report(tenant))

    async def metrics(self, request: Request) -> Response:
        """Prometheus text. On a gateway with tenants it shows every tenant's traffic, so it
        asks for the ``metrics_key_env`` key unless ``--public-metrics`` opened it."""
        config = self.gateway.config
        if self.gateway.tenants.required and not config.public_metrics:
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if self.metrics_key is None or not hmac.compare_digest(given.encode(),
                                                                   self.metrics_key.encode()):
                return self.error(HTTPProblem(
                    401, "Unauthorized: /metrics shows every tenant's usage; send "
                    "`Authorization: Bearer <key>` with the key in [server] metrics_key_env, "
                    "or start with --public-metrics", "invalid_api_key"))
        if self.registry is None:
            return self.error(HTTPProblem(
                404, "metrics need the otel extra: pip install 'llmguard[otel]'", "not_found"))
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.registry), 200, media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.gateway.draining:
            return _json({"status": "draining"}, 503)
        return _json({"status": "ready"})


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    message = "Unknown route" if status == 404 else "Method not allowed"
    return Response(error_json(status, f"{message}: {request.method} {request.url.path}",
                               "not_found" if status == 404 else "method_not_allowed"),
                    status, media_type=_JSON)


def metrics_provider() -> tuple[Any, Any]:
    """An OpenTelemetry SDK meter provider exporting to a registry of our own (for
    ``/metrics``), or ``(None, None)`` without the otel extra."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry
    except ImportError:
        return None, None
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    return provider, registry


def build_app(gateway: Gateway, registry: Any = None) -> Starlette:
    """The Starlette application serving ``gateway``."""
    from .jobs.page import page_routes
    from .jobs.routes import job_routes
    from .jobs.service import JobService
    from .jobs.ws import ws_routes

    routes = Routes(gateway, registry)
    jobs = JobService(gateway)
    routes.redact.secrets += list(jobs.secrets.values())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        jobs.start()
        yield
        await jobs.aclose()
        await gateway.aclose()
        if gateway.meter_provider is not None:
            gateway.meter_provider.shutdown()

    app = Starlette(routes=[
        Route("/v1/chat/completions", routes.chat, methods=["POST"]),
        Route("/v1/embeddings", routes.embeddings, methods=["POST"]),
        Route("/v1/models", routes.models, methods=["GET"]),
        Route("/v1/models/{model:path}", routes.model, methods=["GET"]),
        Route("/v1/usage", routes.usage, methods=["GET"]),
        Route("/v1/usage/{tenant}", routes.usage, methods=["GET"]),
        Route("/metrics", routes.metrics, methods=["GET"]),
        Route("/healthz", routes.healthz, methods=["GET"]),
        Route("/readyz", routes.readyz, methods=["GET"]),
        *job_routes(routes, jobs), *ws_routes(routes, jobs), *page_routes(),
    ], exception_handlers={HTTPException: _not_found}, lifespan=lifespan, middleware=[
        Middleware(Edge, open_gateway=not gateway.tenants.required,
                   allow_origins=gateway.config.allow_origins)])
    app.state.gateway = gateway
    app.state.jobs = jobs
    return app
