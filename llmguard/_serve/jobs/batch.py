"""A batch job (``POST /v1/jobs?mode=batch``): its lines through the model's provider batch API.

The job is one queued task (:data:`~.schedule.BATCH`); the replica that claims it runs
:class:`BatchJob`, the engine of ``llmguard run --batch-api``
(:func:`~llmguard._upstream.batches.engine.run_batches`), once per model of the job (OpenAI's
Batch API at the model's ``base_url``, or Anthropic's Message Batches with ``batch_api =
"anthropic"``; the model's ``batch_enqueued_tokens``, the provider's enqueued-token limit,
queues batches beyond it instead of failing them). Every submission goes to the job's ledger
**in the job store** before it happens, so a replica that takes the task over after a crash
(the store's reclaim of idle tasks) adopts the batches already submitted and polls them: no
line is submitted twice.

Each answered line is recorded as an online job's line is, in ``llmguard run``'s format, its
cost at batch prices (half the model's ``price_input``/``price_output``, what OpenAI and
Anthropic charge), and counted in the tenant's usage at that price. A tenant with
``max_budget`` pays as ``llmguard run --batch-api --max-cost`` does (``BatchSpend``): each
batch reserves its lines' maximum cost at the batch price before it is submitted (the part of
it that fits, the rest waiting for room) and settles to what its answers cost; once even the
next line could pass the cap, the lines left are recorded as ``not_sent`` (BudgetExceeded). Progress follows the
batches' ``request_counts``. Lines that fail or expire are sent once more in a new batch, or,
with ``batch_fallback = "online"``, queued as ordinary lines of the job (the model's normal
stack and the tenant's quota); a line that fails again is recorded as its error. A cancel
cancels the batches at the provider and records the lines they had finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import llmguard as lg

from ..._runners.record import describe, make_record
from ..._upstream.batches.cost import BATCH_DISCOUNT
from ..._upstream.batches.engine import run_batches
from ..._upstream.batches.ledger import StoredLedger
from ..._upstream.batches.plan import Request
from ..._upstream.batches.results import LineResult
from ..._upstream.batches.spend import BatchSpend, not_sent

__all__ = ["BatchJob", "batch_protocol", "batch_provider"]

log = logging.getLogger("llmguard.serve.jobs")
#: Failures of the provider's API in a row (a wrong key, an unreachable URL) before the job's
#: remaining lines are recorded as that failure.
TRIES = 4
_ENDED = ("cancelled", "failed", "completed")
#: What a line the tenant's budget left unsent says to do.
NOT_SENT_HINT = ("submit it again once the budget has room (a higher max_budget, or the next "
                 "budget_duration window)")


def batch_protocol(config: Any) -> str | None:
    """The batch API a gateway model's jobs can use, "openai" or "anthropic"; None when it has
    none (its provider is not "openai", or it has deployments): its jobs run online."""
    if config.provider != "openai" or config.deployments:
        return None
    return config.batch_api or "openai"


async def batch_provider(config: Any) -> Any:
    """The batch protocol of a gateway model (:func:`batch_protocol`) over its SDK client,
    made in a thread: importing an SDK takes seconds the gateway's loop must not wait."""
    return await asyncio.to_thread(_provider, config)


def _provider(config: Any) -> Any:
    key = (os.environ.get(config.api_key_env) if config.api_key_env else None) or "none"
    if batch_protocol(config) == "anthropic":
        from anthropic import AsyncAnthropic

        from ..._upstream.batches.anthropic_batches import AnthropicBatches

        root = config.base_url.removesuffix("/").removesuffix("/v1")
        return AnthropicBatches(AsyncAnthropic(base_url=root, api_key=key))
    from openai import AsyncOpenAI

    from ..._upstream.batches.openai_batches import OpenAIBatches

    return OpenAIBatches(AsyncOpenAI(base_url=config.base_url, api_key=key))


class BatchJob:
    """One run of a batch job's task on this replica (see the module doc). ``fire()`` is the
    job runner's cancel signal, as for an online line."""

    def __init__(self, runner: Any, job_id: str) -> None:
        self.runner, self.job_id = runner, job_id
        self.gateway, self.store = runner.gateway, runner.store
        self.cancel = asyncio.Event()
        #: Request id -> (line index, stored line, gateway model).
        self.lines: dict[str, tuple[int, dict[str, Any], Any]] = {}
        self.tenant: Any = None
        self._finished: dict[str, int] = {}
        self._base = 0

    def fire(self) -> None:
        self.cancel.set()

    async def run(self) -> None:
        """Answer every line of the job that has no record yet (once; see the module doc)."""
        for attempt in range(TRIES):
            job = await self.store.batch(self.job_id)
            if job is None or job["status"] in _ENDED:
                return
            try:
                await self._run(job)
                return
            except Exception as exc:  # noqa: BLE001 - the provider's API failed: again, later
                message = self.runner.redact(f"{type(exc).__name__}: {exc}")
                log.warning("batch job %s: %s", self.job_id, message)
                if attempt + 1 == TRIES:
                    await self._give_up(exc)
                    return
                await asyncio.sleep(2.0 ** attempt)

    async def _run(self, job: dict[str, Any]) -> None:
        await self.store.start(self.job_id)
        self.tenant = self.gateway.tenants.by_name.get(job["tenant"])
        online = {i for e in job["ledger"] if e["event"] == "online" for i in e["ids"]}
        groups: dict[str, list[Request]] = {}
        self.lines.clear()
        for index, line in job["lines"]:
            if index in online:
                continue  # queued online by an earlier run of this task
            model, error = self._model(line)
            if error is not None:
                await self._record(index, make_record(line["id"], line["line"],
                                                      line.get("metadata"), error=error))
                continue
            body = {**line["request"], "model": model.target}
            request = Request(f"{self.job_id}.{index}", body)
            groups.setdefault(model.name, []).append(request)
            self.lines[request.id] = (index, line, model)
        self._base = job["total"] - len(self.lines) - len(online)
        self._finished = dict.fromkeys(groups, 0)
        await asyncio.gather(*(self._group(name, requests, job)
                               for name, requests in groups.items()))

    def _model(self, line: dict[str, Any]) -> tuple[Any, dict[str, str] | None]:
        if line.get("request") is None:
            return None, {"kind": "invalid_input", "type": "InvalidInput",
                          "message": line.get("problem", "")}
        name = line["request"].get("model")
        model = None if self.tenant is None else self.gateway.model_for(self.tenant, name)
        if model is None:
            return None, {"kind": "bad_request", "type": "ModelNotFound", "message":
                          f"The model {name!r} does not exist or you do not have access to it."}
        if batch_protocol(model.config) is None:  # the config changed since the submission
            return None, {"kind": "bad_request", "type": "NoBatchAPI", "message":
                          f"model {name!r} has no batch API any more; submit the line online"}
        return model, None

    async def _group(self, name: str, requests: list[Request], job: dict[str, Any]) -> None:
        """The lines of one model, through its upstream's batch API, with their own ledger."""
        model = self.gateway.models[name]
        provider = await batch_provider(model.config)

        async def keep(event: dict[str, Any]) -> None:
            await self.store.add_ledger(self.job_id, {**event, "group": name})

        async def progress(finished: int) -> None:
            self._finished[name] = finished
            await self.store.report(self.job_id, self._base + sum(self._finished.values()))

        ledger = StoredLedger([e for e in job["ledger"] if e.get("group") == name], keep)
        budget = None if self.tenant is None else self.tenant.budget
        spend = None if budget is None else BatchSpend(budget)
        try:
            outcome = await run_batches(
                requests, provider, ledger, on_result=self._result, on_progress=progress,
                retries=1, resend_online=self._online if job["fallback"] == "online" else None,
                enqueued_tokens=model.config.batch_enqueued_tokens,
                poll=self.gateway.config.jobs.batch_poll, cancel=self.cancel, spend=spend)
        finally:
            if spend is not None:  # batches still running keep their bound (see BatchSpend)
                spend.abandon()
            await provider.close()
        for request_id in outcome.not_sent:  # the tenant's budget could not fit them
            index, line, _model = self.lines[request_id]
            await self._record(index, make_record(line["id"], line["line"], line.get("metadata"),
                                                  error=not_sent(budget, NOT_SENT_HINT)))

    async def _result(self, result: LineResult) -> None:
        index, line, model = self.lines[result.id]
        cfg = model.config
        price = (cfg.price_input * BATCH_DISCOUNT, cfg.price_output * BATCH_DISCOUNT)
        if result.error is None:
            usage = lg.extract_usage(result.response)
            self.gateway.usage.record(self.tenant, model.name, 200, usage, price)
            cost = None if usage is None else round(
                (usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1e6, 10)
            record = make_record(line["id"], line["line"], line.get("metadata"),
                                 response=result.response, requested=model.name, cost=cost)
        else:
            self.gateway.usage.record(self.tenant, model.name, 500)
            error = {k: self.runner.redact(str(v)) for k, v in result.error.items()}
            record = make_record(line["id"], line["line"], line.get("metadata"), error=error,
                                 requested=model.name)
        record["attempts"], record["retries"] = result.attempts, result.attempts - 1
        await self._record(index, record)

    async def _online(self, requests: list[Request]) -> None:
        """``batch_fallback = "online"``: the lines become ordinary tasks of the job (noted in
        the ledger first, so a takeover does not put them in a batch as well)."""
        indices = [self.lines[r.id][0] for r in requests]
        await self.store.add_ledger(self.job_id, {"event": "online", "key": "", "ids": indices})
        await self.store.requeue(self.job_id, indices)

    async def _record(self, index: int, record: dict[str, Any]) -> None:
        if await self.store.record(self.job_id, index, record):
            self.runner.finished(self.job_id)

    async def _give_up(self, exc: Exception) -> None:
        """The provider's API kept failing: every line without a record gets that error."""
        job = await self.store.batch(self.job_id)
        error = describe(exc)
        error["message"] = self.runner.redact(error["message"])
        for index, line in [] if job is None else job["lines"]:
            await self._record(index, make_record(line["id"], line["line"],
                                                  line.get("metadata"), error=dict(error)))
