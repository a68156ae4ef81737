"""BatchAPIServer: OpenAI's Batch API and Anthropic's Message Batches over real HTTP, offline.

::

    server = BatchAPIServer(fail_rate=0.02, expire_rate=0.01)
    async with server:                       # or: with server.in_thread(): (for a subprocess)
        client = AsyncOpenAI(base_url=server.base_url, api_key="test")
        file = await client.files.create(file=("in.jsonl", data), purpose="batch")
        batch = await client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")

OpenAI: ``POST /v1/files`` (multipart), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches`` (paginated), ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``. Anthropic: ``POST /v1/messages/batches``, ``GET`` (list and
one), ``GET /v1/messages/batches/{id}/results``, ``POST .../cancel``. Each batch advances through
its states on the server's loop (:mod:`._batch_state`), its lines answered by ``answer`` (an echo
by default); output and error files list lines in shuffled order, as the providers promise no
order. ``executions`` counts how often each ``custom_id`` was executed over all batches, so a
test can prove that no line was paid twice. aiohttp serves it: multipart uploads and streamed
file bodies are what it is made for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._batch_state import MAX_BYTES, BatchTimings, SimBatch

__all__ = ["BatchAPIServer"]

Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def _echo(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    text = f"echo: {messages[-1].get('content', '')}"
    return {"object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}}


class BatchAPIServer:
    """A simulated provider batch service on ``host:port`` (0: a free port).

    ``fail_rate`` of the executed lines answer 500 (their error in the error file),
    ``expire_rate`` of the lines are never executed and end ``batch_expired`` (the batch then
    ends ``expired``); ``enqueued_token_limit`` is OpenAI's per-model limit on the tokens of
    batches in progress (a batch over it fails with ``token_limit_exceeded``); ``timings`` sets
    how long each state lasts on the loop's clock.
    """

    def __init__(self, *, fail_rate: float = 0.0, expire_rate: float = 0.0,
                 enqueued_token_limit: int | None = None,
                 timings: BatchTimings = BatchTimings(), answer: Answer = _echo,
                 seed: int = 0, api_key: str | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.fail_rate, self.expire_rate = fail_rate, expire_rate
        self.enqueued_token_limit = enqueued_token_limit
        self.timings = timings
        self.answer = answer
        #: When set, requests must carry it (bearer or x-api-key); a wrong key is answered 401
        #: with the key echoed in the message, as some providers do.
        self.api_key = api_key
        self.host, self.port = host, port
        self.rng = random.Random(seed)
        #: custom_id -> times answered, over every batch (OpenAI keeps the line's custom_id).
        self.executions: Counter[str] = Counter()
        #: Last user message -> times answered (Anthropic ids are positions, so count prompts).
        self.prompts: Counter[str] = Counter()
        #: Batch id -> batch, in creation order.
        self.batches: dict[str, SimBatch] = {}
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        #: Online chat completions answered.
        self.online = 0
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoch = 0.0

    @property
    def base_url(self) -> str:
        """What ``AsyncOpenAI(base_url=...)`` takes (Anthropic's client takes ``root_url``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> BatchAPIServer:
        from aiohttp import web  # the testing extra's server; never imported by llmguard

        self._loop = asyncio.get_running_loop()
        self._epoch = time.time() - self._loop.time()
        app = web.Application(client_max_size=MAX_BYTES + 1024 * 1024,
                              middlewares=[self._auth])
        app.add_routes([
            web.post("/v1/chat/completions", self._chat),
            web.post("/v1/files", self._upload), web.get("/v1/files/{id}", self._file),
            web.get("/v1/files/{id}/content", self._content),
            web.post("/v1/batches", self._create), web.get("/v1/batches", self._list),
            web.get("/v1/batches/{id}", self._retrieve),
            web.post("/v1/batches/{id}/cancel", self._cancel),
            web.post("/v1/messages/batches", self._a_create),
            web.get("/v1/messages/batches", self._a_list),
            web.get("/v1/messages/batches/{id}", self._a_retrieve),
            web.get("/v1/messages/batches/{id}/results", self._a_results),
            web.post("/v1/messages/batches/{id}/cancel", self._a_cancel),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._runner.cleanup()

    @contextmanager
    def in_thread(self) -> Iterator[BatchAPIServer]:
        """Serve from a thread with its own loop (real time), for a client in a subprocess."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(self.__aenter__(), loop).result()
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.__aexit__(None, None, None), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def _now(self) -> int:
        assert self._loop is not None
        return int(self._epoch + self._loop.time())

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # -- execution -------------------------------------------------------------------------

    async def _execute(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.executions[custom_id] += 1
        self.prompts[str((body.get("messages") or [{}])[-1].get("content"))] += 1
        result = await self.answer(body)
        result.setdefault("id", f"chatcmpl-{custom_id}")
        result.setdefault("created", self._now())
        return result

    def _enqueued(self, model: str) -> Callable[[], int]:
        return lambda: sum(b.tokens for b in self.batches.values() if b.active and b.model == model)

    def _start(self, batch: SimBatch) -> None:
        model = str((batch.requests[0][1].get("model") if batch.requests else "") or "")
        task = asyncio.ensure_future(batch.run(
            self._now, self.timings, self._enqueued(model), self.enqueued_token_limit,
            self._execute, self.rng, self.fail_rate, self.expire_rate, self._write_files))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write_files(self, batch: SimBatch) -> None:
        outputs = [{"id": f"batch_req_{cid}", "custom_id": cid,
                    "response": {"status_code": status, "request_id": f"req_{cid}", "body": body},
                    "error": None} for cid, (status, body) in batch.done.items() if status == 200]
        errors = [{"id": f"batch_req_{cid}", "custom_id": cid,
                   "response": {"status_code": status, "request_id": f"req_{cid}", "body": body},
                   "error": None} for cid, (status, body) in batch.done.items() if status != 200]
        errors += [{"id": f"batch_req_{cid}", "custom_id": cid, "response": None, "error": err}
                   for cid, err in batch.failed.items()]
        for rows, attr in ((outputs, "output_file_id"), (errors, "error_file_id")):
            if rows:
                self.rng.shuffle(rows)
                data = "".join(json.dumps(row) + "\n" for row in rows).encode()
                setattr(batch, attr, self._store_file(data, f"{batch.id}_{attr[:-8]}.jsonl",
                                                      "batch_output"))

    def _store_file(self, data: bytes, filename: str, purpose: str) -> str:
        file_id = self._new_id("file-")
        self.files[file_id] = ({"id": file_id, "object": "file", "bytes": len(data),
                                "created_at": self._now(), "filename": filename,
                                "purpose": purpose, "status": "processed"}, data)
        return file_id

    # -- OpenAI routes ---------------------------------------------------------------------

    @property
    def _auth(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def check(request: Any, handler: Any) -> Any:
            given = (request.headers.get("authorization", "").removeprefix("Bearer ")
                     or request.headers.get("x-api-key", ""))
            if self.api_key is not None and given != self.api_key:
                return _error(web, 401, f"Incorrect API key provided: {given}.")
            return await handler(request)

        return check

    async def _chat(self, request: Any) -> Any:
        """Online answers (a provider serves both), counted like batch lines by prompt."""
        from aiohttp import web

        body = await request.json()
        self.online += 1
        return web.json_response(await self._execute(f"online-{self.online}", body))

    async def _upload(self, request: Any) -> Any:
        from aiohttp import web

        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or purpose != "batch":
            return _error(web, 400, "a multipart 'file' with purpose 'batch' is required")
        data = upload.file.read()
        return web.json_response(self.files[self._store_file(data, upload.filename, purpose)][0])

    async def _file(self, request: Any) -> Any:
        from aiohttp import web

        found = self.files.get(request.match_info["id"])
        return web.json_response(found[0]) if found else _error(web, 404, "no such file")

    async def _content(self, request: Any) -> Any:
        from aiohttp import web

        found = self.files.get(request.match_info["id"])
        if found is None:
            return _error(web, 404, "no such file")
        return web.Response(body=found[1], content_type="application/octet-stream")

    async def _create(self, request: Any) -> Any:
        from aiohttp import web

        args = await request.json()
        found = self.files.get(args.get("input_file_id", ""))
        if found is None:
            return _error(web, 400, f"input file {args.get('input_file_id')!r} not found")
        if args.get("endpoint") != "/v1/chat/completions" or args.get("completion_window") != "24h":
            return _error(web, 400, "endpoint must be /v1/chat/completions, window 24h")
        requests: list[tuple[str, dict[str, Any]]] = []
        for line in found[1].decode("utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                requests.append((str(row.get("custom_id")), row.get("body") or {}))
        batch = SimBatch(self._new_id("batch_"), requests, self._now(),
                         metadata=args.get("metadata"), input_file_id=found[0]["id"])
        self.batches[batch.id] = batch
        self._start(batch)
        return web.json_response(self._openai(batch))

    async def _list(self, request: Any) -> Any:
        from aiohttp import web

        limit = int(request.query.get("limit", 20))
        after = request.query.get("after")
        newest = list(reversed(self.batches.values()))
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1:] if after in ids else []
        page = newest[:limit]
        return web.json_response({
            "object": "list", "data": [self._openai(b) for b in page],
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": len(newest) > limit})

    async def _retrieve(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.batches.get(request.match_info["id"])
        return web.json_response(self._openai(batch)) if batch else _error(web, 404, "no batch")

    async def _cancel(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(web, 404, "no such batch")
        if batch.status in ("validating", "in_progress"):
            batch.cancel_requested = True
            batch.status, batch.times["cancelling_at"] = "cancelling", self._now()
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

    # -- Anthropic routes ------------------------------------------------------------------

    async def _a_create(self, request: Any) -> Any:
        from aiohttp import web

        args = await request.json()
        rows = args.get("requests")
        if not isinstance(rows, list) or not rows:
            return _error(web, 400, "requests: a non-empty list is required")
        requests = [(str(row.get("custom_id")), dict(row.get("params") or {})) for row in rows]
        batch = SimBatch(self._new_id("msgbatch_"), requests, self._now())
        self.batches[batch.id] = batch
        self._start(batch)
        return web.json_response(self._anthropic(batch))

    async def _a_list(self, request: Any) -> Any:
        from aiohttp import web

        limit = int(request.query.get("limit", 20))
        after = request.query.get("after_id")
        newest = [b for b in reversed(self.batches.values()) if b.id.startswith("msgbatch_")]
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1:] if after in ids else []
        page = newest[:limit]
        return web.json_response({
            "data": [self._anthropic(b) for b in page], "has_more": len(newest) > limit,
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None})

    async def _a_retrieve(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.batches.get(request.match_info["id"])
        return web.json_response(self._anthropic(batch)) if batch else _error(web, 404, "none")

    async def _a_cancel(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(web, 404, "no such batch")
        if batch.status in ("validating", "in_progress"):
            batch.cancel_requested = True
            batch.status, batch.times["cancelling_at"] = "cancelling", self._now()
        return web.json_response(self._anthropic(batch))

    async def _a_results(self, request: Any) -> Any:
        from aiohttp import web

        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.status not in ("completed", "expired", "cancelled", "failed"):
            return _error(web, 404, "results are available once the batch has ended")
        rows = [{"custom_id": cid, "result": _anthropic_result(status, body)}
                for cid, (status, body) in batch.done.items()]
        rows += [{"custom_id": cid, "result": {"type": "expired" if err["code"] == "batch_expired"
                                               else "canceled"}}
                 for cid, err in batch.failed.items()]
        self.rng.shuffle(rows)
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
                "results_url": (f"{self.root_url}/v1/messages/batches/{batch.id}/results"
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
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat().replace(
        "+00:00", "Z")


def _error(web: Any, status: int, message: str) -> Any:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                        "param": None, "code": None}}, status=status)
