"""Anthropic's Message Batches endpoints of :class:`~llmguard.testing.BatchAPIServer`."""

from __future__ import annotations

import datetime
import json
from typing import Any

from ._batch_state import SimBatch, error, page

__all__ = ["AnthropicBatchRoutes"]


class AnthropicBatchRoutes:
    """``/v1/messages/batches``: create, list, retrieve, results (JSONL), cancel."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def routes(self, web: Any) -> list[Any]:
        return [
            web.post("/v1/messages/batches", self._a_create),
            web.get("/v1/messages/batches", self._a_list),
            web.get("/v1/messages/batches/{id}", self._a_retrieve),
            web.get("/v1/messages/batches/{id}/results", self._a_results),
            web.post("/v1/messages/batches/{id}/cancel", self._a_cancel),
        ]

    async def _a_create(self, request: Any) -> Any:
        from aiohttp import web

        args = await request.json()
        rows = args.get("requests")
        if not isinstance(rows, list) or not rows:
            return error(web, 400, "requests: a non-empty list is required")
        requests = [(str(row.get("custom_id")), dict(row.get("params") or {})) for row in rows]
        batch = SimBatch(self.server._new_id("msgbatch_"), requests, self.server._now())
        self.server.batches[batch.id] = batch
        self.server._start(batch)
        return web.json_response(self._anthropic(batch))

    async def _a_list(self, request: Any) -> Any:
        from aiohttp import web

        newest = [b for b in reversed(self.server.batches.values())
                  if b.id.startswith("msgbatch_")]
        found, more = page(newest, int(request.query.get("limit", 20)),
                           request.query.get("after_id"))
        return web.json_response({
            "data": [self._anthropic(b) for b in found], "has_more": more,
            "first_id": found[0].id if found else None,
            "last_id": found[-1].id if found else None})

    async def _a_retrieve(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.server.batches.get(request.match_info["id"])
        return web.json_response(self._anthropic(batch)) if batch else error(web, 404, "none")

    async def _a_cancel(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.server.batches.get(request.match_info["id"])
        if batch is None:
            return error(web, 404, "no such batch")
        batch.cancel(self.server._now())
        return web.json_response(self._anthropic(batch))

    async def _a_results(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.server.batches.get(request.match_info["id"])
        if batch is None or batch.status not in ("completed", "expired", "cancelled", "failed"):
            return error(web, 404, "results are available once the batch has ended")
        rows = [{"custom_id": cid, "result": _anthropic_result(status, body)}
                for cid, (status, body) in batch.done.items()]
        rows += [{"custom_id": cid, "result": {"type": "expired" if err["code"] == "batch_expired"
                                               else "canceled"}}
                 for cid, err in batch.failed.items()]
        self.server.rng.shuffle(rows)
        return web.Response(body="".join(json.dumps(r) + "\n" for r in rows).encode(),
                            content_type="application/binary")

    def _anthropic(self, batch: SimBatch) -> dict[str, Any]:
        ended = batch.status in ("completed", "expired", "cancelled", "failed")
        succeeded = sum(1 for status, _ in batch.done.values() if status == 200)
        expired = sum(1 for e in batch.failed.values() if e["code"] == "batch_expired")
        canceled = len(batch.failed) - expired
        counts = {"processing": len(batch.requests) - len(batch.done) - len(batch.failed),
                  "succeeded": succeeded, "errored": len(batch.done) - succeeded,
                  "canceled": canceled, "expired": expired}
        status = ("ended" if ended else "canceling" if batch.status == "cancelling"
                  else "in_progress")
        iso = _iso
        return {"id": batch.id, "type": "message_batch", "processing_status": status,
                "request_counts": counts, "created_at": iso(batch.created_at),
                "expires_at": iso(batch.created_at + 86_400),
                "ended_at": iso(max(batch.times.values())) if ended and batch.times else None,
                "cancel_initiated_at": iso(batch.times.get("cancelling_at")),
                "archived_at": None,
                "results_url": (f"{self.server.root_url}/v1/messages/batches/{batch.id}/results"
                                if ended else None)}


def _anthropic_result(status: int, body: dict[str, Any]) -> dict[str, Any]:
    if status != 200:
        return {"type": "errored", "error": {"type": "error", "error": {
            "type": "api_error", "message": body.get("error", {}).get("message", "error")}}}
    text = body["choices"][0]["message"]["content"]
    usage = body.get("usage") or {}
    return {"type": "succeeded", "message": {
        "id": body.get("id"), "type": "message", "role": "assistant", "model": body.get("model"),
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                                         "output_tokens": usage.get("completion_tokens", 0)}}}


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat().replace(
        "+00:00", "Z")


