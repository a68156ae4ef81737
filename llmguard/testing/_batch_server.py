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

from ._batch_anthropic import AnthropicBatchRoutes
from ._batch_openai import OpenAIBatchRoutes
from ._batch_state import MAX_BYTES, BatchTimings, SimBatch, error

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
    how long each state lasts on the loop's clock (set anew, it applies to the next step of
    every batch, running ones too).
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
        app.add_routes([web.post("/v1/chat/completions", self._chat),
                        *OpenAIBatchRoutes(self).routes(web),
                        *AnthropicBatchRoutes(self).routes(web)])
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
            self._now, lambda: self.timings, self._enqueued(model), self.enqueued_token_limit,
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

    # -- auth and online chat --------------------------------------------------------------

    @property
    def _auth(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def check(request: Any, handler: Any) -> Any:
            given = (request.headers.get("authorization", "").removeprefix("Bearer ")
                     or request.headers.get("x-api-key", ""))
            if self.api_key is not None and given != self.api_key:
                return error(web, 401, f"Incorrect API key provided: {given}.")
            return await handler(request)

        return check

    async def _chat(self, request: Any) -> Any:
        """Online answers (a provider serves both), counted like batch lines by prompt."""
        from aiohttp import web

        body = await request.json()
        self.online += 1
        return web.json_response(await self._execute(f"online-{self.online}", body))
