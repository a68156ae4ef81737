"""A server shaped like Anthropic's rate limiter, and Anthropic's Messages API for any server.

:class:`InputOutputBucketServer` enforces requests, input tokens and output tokens per minute as
three buckets refilling continuously, the way Anthropic documents its RPM/ITPM/OTPM limits:
input tokens are counted when a request arrives; output tokens are estimated from ``max_tokens``
when it arrives and adjusted to the actual output when the answer ends. It answers with
Anthropic's ``anthropic-ratelimit-*`` headers (reset times in RFC 3339).

:func:`message` answers a Messages API request (``model``, ``messages``, ``system``,
``max_tokens``) from any :class:`SimulatedProvider` with a ``message`` object and its usage, and
:func:`sse` writes it as the event stream of ``stream=True``: what :class:`LoopbackServer` serves
at ``POST /v1/messages`` for the real ``anthropic`` SDK.
"""

from __future__ import annotations

import json
import math
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from .._core import clock
from .._core.check import number
from .._core.tokens import estimate_tokens
from ._provider import SimulatedProvider
from ._ideal import fresh, in_order
from ._quota import FixedWindow, TokenBucket
from ._servers import QuotaServer, admission_headers

__all__ = ["InputOutputBucketServer", "message", "sse"]


def _input_tokens(kwargs: dict[str, Any]) -> int:
    """What the server counts as a request's input: its messages and its system prompt."""
    system = kwargs.get("system")
    prompt = estimate_tokens(messages=kwargs.get("messages") or [], max_tokens=0)
    return prompt + (estimate_tokens(system, max_tokens=0) if system else 0)


async def message(provider: SimulatedProvider, **kwargs: Any) -> dict[str, Any]:
    """Answer a Messages API request from ``provider`` (charged as it charges, served as it
    serves): a ``message`` dict with ``usage.input_tokens`` and ``usage.output_tokens``."""
    input_tokens = _input_tokens(kwargs)
    output = provider._output_for(kwargs)
    reserve = kwargs.get("max_tokens")
    limited = isinstance(reserve, int)
    # (for the server's headers: ``_answered``; reset: the task's answers after it are not)
    streamed = _STREAMED.set(bool(kwargs.get("stream")))
    try:
        await provider._serve(input_tokens, output,
                              input_tokens + (reserve if limited else output))
    finally:
        _STREAMED.reset(streamed)
    return {
        "id": f"msg_{id(kwargs):x}", "type": "message", "role": "assistant",
        "model": kwargs.get("model", "simulated"),
        "content": [{"type": "text", "text": "x" * (4 * output)}],
        "stop_reason": "max_tokens" if limited and output >= reserve else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


def sse(answer: dict[str, Any]) -> bytes:
    """``answer`` (a :func:`message`) as Anthropic streams it: ``message_start`` with the input
    usage, one text block in deltas, ``message_delta`` with the output usage, ``message_stop``."""
    usage = answer["usage"]
    start = {**answer, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 1}}
    text = answer["content"][0]["text"]
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]
    for i in range(0, len(text), 16):
        events.append(("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text[i:i + 16]}}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
                           "usage": {"output_tokens": usage["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n"
                   for name, data in events).encode()


def rfc3339(unix: float) -> str:
    """A Unix time as Anthropic writes a reset: whole seconds (rounded up), UTC, ``Z``."""
    moment = datetime.fromtimestamp(math.ceil(unix), timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


#: ``(input, output reserved)`` of the request being served, for its admission.
_CHARGING: ContextVar[tuple[int, int]] = ContextVar("llmguard_io_charging", default=(0, 0))
#: True while the request being served is answered as a stream (``stream=True``).
_STREAMED: ContextVar[bool] = ContextVar("llmguard_io_streamed", default=False)


class InputOutputBucketServer(QuotaServer):
    """Requests, input tokens and output tokens per minute (``rpm``, ``input_tpm``,
    ``output_tpm``), each a bucket refilling continuously over ``window`` seconds, full at the
    start, as Anthropic enforces them: a request takes 1 request, its input tokens and its
    ``max_tokens`` of output at arrival, and gets back the output it did not use when its answer
    ends (a request cancelled after it arrived keeps its charge).

    Answers carry ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,
    remaining,reset}`` as of when they are sent: at the end, or as a stream (``stream=True``)
    starts, its ``max_tokens`` charged (``-tokens-`` is the tightest of
    input and output; resets are RFC 3339 times when the bucket is full again); a 429 carries
    them and ``retry-after``. ``shape="fixed"``: a gateway in front of Anthropic counting each
    per fixed window from ``epoch`` (loop time) instead, the same way, resets at its boundary.
    ``await server.amessages(**kwargs)`` answers in process; :class:`LoopbackServer` serves it
    over HTTP to the ``anthropic`` SDK.
    """

    kind = "input/output token bucket"
    processing_header = None  # Anthropic's answers do not say the server's own time

    def __init__(self, *, rpm: int | None = None, input_tpm: int | None = None,
                 output_tpm: int | None = None, window: float = 60.0,
                 refunds_output: bool = True, shape: str = "bucket", epoch: float = 0.0,
                 **options: Any) -> None:
        super().__init__(window=window, **options)
        if shape not in ("bucket", "fixed"):
            raise ValueError(f"shape must be 'bucket' (Anthropic's buckets) or 'fixed' (a "
                             f"gateway's counters per window from epoch=), got {shape!r}")
        #: ``"bucket"`` (Anthropic's) or ``"fixed"``: counted per window ``[epoch + i *
        #: window, ...)``, reset at each boundary (a gateway in front of Anthropic).
        self.shape = shape
        if not isinstance(refunds_output, bool):
            raise TypeError(f"refunds_output must be True (Anthropic's rule: unused output given "
                            f"back) or False (max_tokens stays charged), got {refunds_output!r}")
        #: False: the output reserved at arrival stays charged (a server unlike Anthropic's).
        self.refunds_output = refunds_output
        for name, value in (("rpm", rpm), ("input_tpm", input_tpm), ("output_tpm", output_tpm)):
            number(name, value, integer=True, optional=True, hint="; or None for no such quota")
        if rpm is None and input_tpm is None and output_tpm is None:
            raise ValueError("InputOutputBucketServer needs rpm=, input_tpm= and/or output_tpm=")
        def policy(limit: int | None) -> Any:
            if not limit:
                return None
            return TokenBucket(limit, window) if shape == "bucket" else \
                FixedWindow(limit, window, epoch)

        self.quotas = {"requests": policy(rpm), "input-tokens": policy(input_tpm),
                       "output-tokens": policy(output_tpm)}

    async def amessages(self, **kwargs: Any) -> dict[str, Any]:
        """Answer a Messages API request in process (see :func:`message`)."""
        return await message(self, **kwargs)

    def _amounts(self, tokens: int) -> dict[str, int]:
        charging = _CHARGING.get()
        return {"requests": 1, "input-tokens": charging[0], "output-tokens": charging[1]}

    async def _serve(self, input_tokens: int, output: int, charged: int) -> None:
        # read by _admit, in this request's context (it arrives after its send latency)
        _CHARGING.set((input_tokens, charged - input_tokens))
        await super()._serve(input_tokens, output, charged)

    def _answered(self, input_tokens: int, output: int, charged: int) -> None:
        bucket = self.quotas["output-tokens"]
        if bucket is not None and self.refunds_output:  # the answer ended: charged what it used
            bucket.give_back(self._now(), charged - input_tokens - output)
        if not _STREAMED.get():  # a stream's go out as it starts: as of its admission
            admission_headers.set(self.headers(self._now()))  # sent with the answer, at its end

    def headers(self, now: float) -> dict[str, str]:
        if not self.rate_limit_headers:
            return {}
        out: dict[str, str] = {}
        wall = clock.wall()
        tightest: tuple[int, int, float] | None = None
        for unit, quota in self.quotas.items():
            if quota is None:
                continue
            remaining, reset = quota.remaining(now), quota.reset(now)
            size = quota.capacity if isinstance(quota, TokenBucket) else quota.limit
            self._report(out, unit, size, remaining, wall + reset)
            if unit != "requests" and (tightest is None or remaining < tightest[1]):
                tightest = (size, remaining, wall + reset)
        if tightest is not None:
            self._report(out, "tokens", *tightest)
        return out

    @staticmethod
    def _report(out: dict[str, str], unit: str, limit: int, remaining: int,
                reset: float) -> None:
        out[f"anthropic-ratelimit-{unit}-limit"] = str(limit)
        out[f"anthropic-ratelimit-{unit}-remaining"] = str(remaining)
        out[f"anthropic-ratelimit-{unit}-reset"] = rfc3339(reset)

    def ideal_time(self, n: int, *, tokens: int = 0, start: float = 0.0,  # type: ignore[override]
                   service: float | None = None, input_tokens: int = 0, max_tokens: int = 0,
                   output_tokens: int = 0, in_flight: int | None = None) -> float:
        """Seconds from ``start`` until the last of ``n`` equal requests completes at the
        soonest these buckets allow: ``input_tokens`` each, ``max_tokens`` reserved of which
        ``output_tokens`` are used, each taking ``service`` seconds (default ``latency``).
        The output bucket must hold the ``n``-th request's ``max_tokens`` after the others'
        outputs: ``(n - 1) * output_tokens + max_tokens`` within its size plus its refill
        (``shape="fixed"``: within each window's count, its answers ending in it).

        That bound lets every answer give its unused output back at once. ``in_flight``: the
        requests sent in order instead, at most that many at once, each holding its
        ``max_tokens`` until its answer ends ``service`` s later (as the server charges: a
        burst of ``max_tokens`` first, the give-back only then, in the window it ends in):
        a batch started late in a fixed window sends in it only what its ``max_tokens``
        leave room for (15 of 200 in 3,000, none answered before :00 from :58), and a last
        window's calls go in waves (the 35 left at :00: 6 s, not 2)."""
        service = self.latency if service is None else service
        admit = start
        requests, inputs, outputs = self.quotas.values()
        if in_flight is not None:
            number("in_flight", in_flight, integer=True,
                   hint="; the calls in flight at once, e.g. in_flight=32")
            quotas = [(fresh(q), a) for q, a in
                      ((requests, 1), (inputs, input_tokens), (outputs, max_tokens))
                      if q is not None]
            unused = max_tokens - output_tokens if self.refunds_output else 0
            back = (quotas[-1][0], unused) if outputs is not None and unused > 0 else None
            return in_order(quotas, n, start, service, in_flight, back)
        if self.shape == "fixed":  # per window: the output of all but the last, its max_tokens
            per = [q.limit // amount for q, amount in ((requests, 1), (inputs, input_tokens))
                   if q is not None and amount]
            if outputs is not None:
                per.append((outputs.limit - max_tokens) // max(1, output_tokens) + 1
                           if self.refunds_output else outputs.limit // max_tokens)
            later = (n - 1) // min(per)
            first = next(q for q in (requests, inputs, outputs) if q is not None)
            admit = start if later == 0 else \
                first.epoch + (first.index(start) + later) * first.window
            return admit - start + service
        if requests is not None:
            admit = max(admit, requests.earliest(n, 1, start))
        if inputs is not None:
            admit = max(admit, inputs.earliest(n, input_tokens, start))
        if outputs is not None:
            need = (n - 1) * output_tokens + max_tokens - outputs.capacity
            admit = max(admit, start + max(0.0, need / outputs.rate))
        return admit - start + service
