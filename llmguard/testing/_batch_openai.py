"""OpenAI's file and batch endpoints of :class:`~llmguard.testing.BatchAPIServer`."""

from __future__ import annotations

import json
from typing import Any

from ._batch_state import SimBatch, error, page

__all__ = ["OpenAIBatchRoutes"]


class OpenAIBatchRoutes:
    """``/v1/files`` and ``/v1/batches``: upload, content, create, list, retrieve, cancel."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def routes(self, web: Any) -> list[Any]:
        return [
            web.post("/v1/files", self._upload), web.get("/v1/files/{id}", self._file),
            web.get("/v1/files/{id}/content", self._content),
            web.post("/v1/batches", self._create), web.get("/v1/batches", self._list),
            web.get("/v1/batches/{id}", self._retrieve),
            web.post("/v1/batches/{id}/cancel", self._cancel),
        ]

    async def _upload(self, request: Any) -> Any:
        from aiohttp import web

        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or purpose != "batch":
            return error(web, 400, "a multipart 'file' with purpose 'batch' is required")
        data = upload.file.read()
        file_id = self.server._store_file(data, upload.filename, purpose)
        return web.json_response(self.server.files[file_id][0])

    async def _file(self, request: Any) -> Any:
        from aiohttp import web

        found = self.server.files.get(request.match_info["id"])
        return web.json_response(found[0]) if found else error(web, 404, "no such file")

    async def _content(self, request: Any) -> Any:
        from aiohttp import web

        found = self.server.files.get(request.match_info["id"])
        if found is None:
            return error(web, 404, "no such file")
        return web.Response(body=found[1], content_type="application/octet-stream")

    async def _create(self, request: Any) -> Any:
        from aiohttp import web

        args = await request.json()
        found = self.server.files.get(args.get("input_file_id", ""))
        if found is None:
            return error(web, 400, f"input file {args.get('input_file_id')!r} not found")
        if args.get("endpoint") != "/v1/chat/completions" or args.get("completion_window") != "24h":
            return error(web, 400, "endpoint must be /v1/chat/completions, window 24h")
        requests: list[tuple[str, dict[str, Any]]] = []
        for line in found[1].decode("utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                requests.append((str(row.get("custom_id")), row.get("body") or {}))
        batch = SimBatch(self.server._new_id("batch_"), requests, self.server._now(),
                         metadata=args.get("metadata"), input_file_id=found[0]["id"])
        self.server.batches[batch.id] = batch
        self.server._start(batch)
        return web.json_response(self._openai(batch))

    async def _list(self, request: Any) -> Any:
        from aiohttp import web

        newest = [b for b in reversed(self.server.batches.values()) if b.id.startswith("batch_")]
        found, more = page(newest, int(request.query.get("limit", 20)), request.query.get("after"))
        return web.json_response({
            "object": "list", "data": [self._openai(b) for b in found],
            "first_id": found[0].id if found else None,
            "last_id": found[-1].id if found else None, "has_more": more})

    async def _retrieve(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.server.batches.get(request.match_info["id"])
        return web.json_response(self._openai(batch)) if batch else error(web, 404, "no batch")

    async def _cancel(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.server.batches.get(request.match_info["id"])
        if batch is None:
            return error(web, 404, "no such batch")
        batch.cancel(self.server._now())
        return web.json_response(self._openai(batch))

    def _openai(self, batch: SimBatch) -> dict[str, Any]:
        times = {f"{state}_at": batch.times.get(f"{state}_at") for state in (
            "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
            "cancelled")}
        return {"id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions",
                "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
                "input_file_id": batch.input_file_id, "completion_window": "24h",
                "status": batch.status, "output_file_id": batch.output_file_id,
                "error_file_id": batch.error_file_id, "created_at": batch.created_at,
                "expires_at": batch.created_at + 86_400, **times,
                "request_counts": batch.request_counts(), "metadata": batch.metadata}
