"""The HTTP surface: OpenAI-compatible routes on Starlette, plus metrics, health and usage.

``POST /v1/chat/completions`` (JSON, or ``stream: true`` as SSE), ``POST /v1/embeddings``,
``GET /v1/models[/{id}]``, ``GET /v1/usage[/{tenant}]``; ``GET /metrics`` (Prometheus),
``/healthz`` (alive), ``/readyz`` (503 once draining). Every error has OpenAI's body shape.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


from .chat import ChatRoutes, Departures, json_response
from .config import ConfigError
from .edge import Edge
from .errors import HTTPProblem, Redactor, error_json, from_exception
from .gateway import Gateway
from .tenants import Tenant

__all__ = ["build_app"]

_JSON = "application/json"


class Routes(ChatRoutes):
    """The route handlers over one :class:`Gateway` (chat and embeddings in :mod:`.chat`)."""

    def __init__(self, gateway: Gateway, metrics_registry: Any = None) -> None:
        self.gateway = gateway
        self.registry = metrics_registry
        self.departures = Departures()
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

    def tenant_of(self, request: Request, headers: Any = None) -> Tenant:
        """The tenant of the request's API key (``headers``: its headers already looked up,
        if at hand), else the 401; 503 once draining."""
        if self.gateway.draining:
            raise HTTPProblem(503, "the gateway is shutting down; retry on another replica",
                              "server_shutting_down", headers={"connection": "close",
                                                                "retry-after": "1"})
        headers = request.headers if headers is None else headers
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("api-key")
        tenant = self.gateway.tenants.authenticate(key)
        if tenant is None:  # the message never repeats the key it got
            what = "no API key was given" if not key else "the API key is not valid"
            raise HTTPProblem(401, f"Unauthorized: {what}; send `Authorization: Bearer <key>`",
                              "invalid_api_key")
        return tenant

    def _model_card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "llmguard"}

    async def models(self, request: Request) -> Response:
        try:
            tenant = self.tenant_of(request)
        except HTTPProblem as exc:
            return self.error(exc)
        names = [n for n in self.gateway.models if tenant.may_use(n)]
        return json_response({"object": "list", "data": [self._model_card(n) for n in names]})

    async def model(self, request: Request) -> Response:
        try:
            tenant = self.tenant_of(request)
            name = request.path_params["model"]
            if self.gateway.model_for(tenant, name) is None:
                raise HTTPProblem(404, f"The model {name!r} does not exist or you do not have "
                                  "access to it.", "model_not_found", param="model")
        except HTTPProblem as exc:
            return self.error(exc)
        return json_response(self._model_card(name))

    async def usage(self, request: Request) -> Response:
        try:
            tenant = self.tenant_of(request)
            asked = request.path_params.get("tenant", tenant.name)
            if asked != tenant.name:  # another tenant's usage: as if it did not exist
                raise HTTPProblem(404, f"No tenant {asked!r} is visible with this API key.",
                                  "not_found")
        except HTTPProblem as exc:
            return self.error(exc)
        return json_response(await self.gateway.usage.report(tenant))

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
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.gateway.draining:
            return json_response({"status": "draining"}, 503)
        return json_response({"status": "ready"})


class _App(Starlette):
    """Starlette with :class:`~.edge.Edge` outermost (before its error middleware), so the hot
    routes Edge serves itself skip Starlette's stack; ``edge`` holds Edge's options."""

    edge: dict[str, Any]

    def build_middleware_stack(self) -> Any:
        return Edge(super().build_middleware_stack(), **self.edge)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    message = "Unknown route" if status == 404 else "Method not allowed"
    return Response(error_json(status, f"{message}: {request.method} {request.url.path}",
                               "not_found" if status == 404 else "method_not_allowed"),
                    status, media_type=_JSON)


def metrics_provider() -> tuple[Any, Any]:
    """An OpenTelemetry SDK meter provider exporting to a registry of our own (for
    ``/metrics``), or ``(None, None)`` without the otel extra."""
    from .._observability.aggregated import prometheus_provider

    try:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        # scraped on the event loop, which records too: histograms kept in process
        return prometheus_provider(registry), registry
    except ImportError:
        return None, None


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

    app = _App(routes=[
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
    ], exception_handlers={HTTPException: _not_found}, lifespan=lifespan)
    app.edge = {"open_gateway": not gateway.tenants.required,
                "allow_origins": gateway.config.allow_origins,
                "hot": {"/v1/chat/completions": routes.chat, "/v1/embeddings": routes.embeddings}}
    app.state.gateway = gateway
    app.state.jobs = jobs
    return app
