"""``POST /v1/jobs``: a job's submission, parsed off the event loop, capped per tenant, and
safe to repeat with an ``Idempotency-Key`` (the same key and body: the same job; another body:
422), whichever replica answers."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import HTTPProblem
from ..validate import parse_json, read_bytes
from .batch import batch_protocol
from .records import JSONL_TYPES, OPTIONS, from_json, from_jsonl
from .service import public
from .webhooks import check_url

__all__ = ["SubmitRoutes", "json_response"]

_JSON = "application/json"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON answer (anything not JSON-native as its ``str``)."""
    return Response(json.dumps(obj, separators=(",", ":"), default=str), status, headers, _JSON)


def _parse(raw: bytes, kind: str, default: str | None,
           max_lines: int) -> tuple[list[str], dict[str, Any], set[Any]]:
    """The body's lines, each as compact JSON text (what the store keeps), its options and
    the models its lines name."""
    if kind in JSONL_TYPES:
        lines, options = from_jsonl(raw, default, max_lines), {}
    else:
        lines, options = from_json(parse_json(raw), default, max_lines)
    models = {line["request"].get("model") for line in lines if "request" in line}
    return [json.dumps(line, separators=(",", ":")) for line in lines], options, models


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255 and key.isprintable()):
        raise HTTPProblem(400, "Idempotency-Key must be 1 to 255 printable characters",
                          "invalid_request", param="Idempotency-Key")
    return key


class SubmitRoutes:
    """The submission handler (mixed into :class:`~.routes.JobRoutes`, which gives
    ``routes``, ``service`` and ``config``)."""

    routes: Any
    service: Any
    config: Any

    async def submit(self, request: Request) -> Response:
        key: str | None = None
        tenant = None
        try:
            tenant = self.routes.tenant_of(request)
            key = _idempotency_key(request)
            raw = await read_bytes(request, self.config.max_body_bytes)
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            query = request.query_params
            default = query.get("model") or self.config.default_model
            # Parsing a large body takes a while: in a thread, so the gateway keeps serving.
            lines, options, models = await asyncio.to_thread(_parse, raw, kind, default,
                                                             self.config.max_lines)
            if kind in JSONL_TYPES:
                options = {k: query[k] for k in OPTIONS if k in query and k != "metadata"}
                if "metadata" in query:
                    options["metadata"] = parse_json(query["metadata"].encode())
            else:  # ?mode= goes with either body, as ?model= does
                for name in ("mode", "batch_fallback"):
                    if name in query:
                        options.setdefault(name, query[name])
            meta = await self._meta(tenant, request, options)
            self._batchable(tenant, meta, models)
            if key is not None:
                fingerprint = hashlib.sha256(f"{kind}\0{query}\0".encode() + raw).hexdigest()
                replay = await self._replay(tenant, key, fingerprint, meta["id"])
                if replay is not None:
                    key = None  # not ours to release
                    return replay
            del raw
            active = await self.service.store.active(tenant.name)
            if active >= self.config.max_jobs_per_tenant:
                raise HTTPProblem(429, f"tenant {tenant.name!r} has {active} jobs queued or "
                                  f"running, its limit ([jobs] max_jobs_per_tenant = "
                                  f"{self.config.max_jobs_per_tenant}); wait for one to end",
                                  "too_many_jobs", headers={"retry-after": "10"})
            await self.service.store.create(meta, lines)
            key = None
            job = await self.service.get(tenant.name, meta["id"])
        except Exception as exc:  # noqa: BLE001 - answered OpenAI-style
            if key is not None and tenant is not None:  # no job was made: the key is free
                await self.service.store.forget_key(tenant.name, key)
            return self.routes.error(exc)
        assert job is not None
        return json_response(public(job), 202, {"location": f"/v1/jobs/{meta['id']}"})

    async def _meta(self, tenant: Any, request: Request, options: dict[str, Any]) -> dict:
        """The new job's meta from its options (priority, metadata, callback_url), checked."""
        priority = options.get("priority", request.headers.get("x-priority"))
        if priority is not None and not isinstance(priority, str):
            raise HTTPProblem(400, "'priority' must be low, normal or high",
                              "invalid_priority", param="priority")
        try:
            level = tenant.priority(priority)
        except ValueError as exc:
            raise HTTPProblem(400, str(exc), "invalid_priority", param="priority") from None
        metadata = options.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise HTTPProblem(400, "'metadata' must be an object", "invalid_request",
                              param="metadata")
        callback = options.get("callback_url")
        if callback is not None:
            callback = await check_url(callback, self.config.allow_private_callbacks)
            if tenant.name not in self.service.secrets:
                raise HTTPProblem(400, f"tenant {tenant.name!r} has no webhook secret to sign "
                                  "callbacks with; set webhook_secret_env in its config",
                                  "webhooks_not_configured", param="callback_url")
        meta = self.service.new_meta(tenant.name, level, callback, metadata)
        mode, fallback = options.get("mode", "online"), options.get("batch_fallback")
        if mode not in ("online", "batch"):
            raise HTTPProblem(400, f"'mode' must be online (each line sent on its own, the "
                              f"default) or batch (the provider's batch API at batch prices), "
                              f"got {mode!r}", "invalid_request", param="mode")
        if fallback is not None and (mode != "batch" or fallback not in ("batch", "online")):
            raise HTTPProblem(400, "'batch_fallback' goes with mode=batch and is batch (failed "
                              "and expired lines go in a new batch, the default) or online "
                              f"(through the model's normal stack), got {fallback!r}",
                              "invalid_request", param="batch_fallback")
        if mode == "batch":
            meta["mode"], meta["batch_fallback"] = mode, fallback or "batch"
        return meta

    def _batchable(self, tenant: Any, meta: dict[str, Any], models: set[Any]) -> None:
        """A batch job's models must have a batch API (a model it may not use is that line's
        error, as online)."""
        if meta.get("mode") != "batch":
            return
        gateway = self.routes.gateway
        for name in sorted(models, key=str):
            model = gateway.model_for(tenant, name)
            if model is not None and batch_protocol(model.config) is None:
                raise HTTPProblem(400, f"model {name!r} has no batch API (provider = "
                                  f"{model.config.provider!r}); mode=batch needs a model with "
                                  "provider = \"openai\" and no deployments (OpenAI's Batch API "
                                  "at its base_url, or batch_api = \"anthropic\"); submit the "
                                  "job without mode=batch to run it online",
                                  "batch_unavailable", param="mode")

    async def _replay(self, tenant: Any, key: str, fingerprint: str,
                      job_id: str) -> Response | None:
        """None when ``key`` is now ``job_id``'s; else the answer for a repeated submission:
        the same job (same body), 422 (another body), 409 (the first is still being made)."""
        found = await self.service.store.idempotent(tenant.name, key, fingerprint, job_id)
        if found is None:
            return None
        first, its_print = found
        if its_print != fingerprint:
            raise HTTPProblem(422, "this Idempotency-Key was already used for a job with a "
                              "different body; use a new key for a new job",
                              "idempotency_key_reused", param="Idempotency-Key")
        job = await self.service.get(tenant.name, first)
        if job is None:
            raise HTTPProblem(409, "a job with this Idempotency-Key is being submitted right "
                              "now; retry in a moment", "idempotency_key_in_use",
                              param="Idempotency-Key", headers={"retry-after": "1"})
        return json_response(public(job), 202, {"location": f"/v1/jobs/{first}",
                                        "idempotent-replayed": "true"})
