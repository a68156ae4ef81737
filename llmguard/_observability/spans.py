"""Spans for the Metrics layer: one INTERNAL span per call, one CLIENT span per attempt.

The call span (``llmguard {pipeline}``) covers the whole guarded call: cache, waits, retries,
fallbacks. Each attempt at the provider gets a GenAI CLIENT span named as the conventions say
(``{gen_ai.operation.name} {gen_ai.request.model}``), made by wrapping the pipeline's terminal
handler once per build (``around_terminal``): the call's function is never replaced, so what
Cache keys on stays the guarded function. An attempt reads the model from its own arguments, so
a Fallback's ``{"model": ...}`` attempt carries the alternate's model.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .._core.call import Call
from .._core.errors import AdmissionError
from .._core.layer import Handler
from .._core.stream import Stream
from .conventions import error_leaf, error_type
from .series import attributes

if TYPE_CHECKING:
    from .view import MetricsView

__all__ = ["attempt_spans", "detach_span", "end_span", "start_span"]


def _attributes(metrics: MetricsView, call: Call) -> dict[str, Any]:
    return attributes(metrics, call.record, call.model or metrics.model)


def start_span(metrics: MetricsView, call: Call) -> tuple[Any, Any]:
    """Start the call's INTERNAL span and make it current for the inner layers and attempts."""
    from opentelemetry import context, trace

    name = f"llmguard {metrics.name}" if metrics.name else "llmguard"
    span = metrics.tracer.start_span(name, kind=trace.SpanKind.INTERNAL,
                                     attributes=_attributes(metrics, call))
    return span, context.attach(trace.set_span_in_context(span))


def detach_span(started: tuple[Any, Any]) -> tuple[Any, None]:
    """Stop the span being current here (it is ended later, when its stream ends)."""
    from opentelemetry import context

    span, token = started
    context.detach(token)
    return span, None


def _fail(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type(exc))
    span.set_status(Status(StatusCode.ERROR, str(error_leaf(exc))))


def end_span(started: tuple[Any, Any], call: Call, exc: BaseException | None) -> None:
    """Annotate the call span with what the layers learned (retries, cache, rejection), end it."""
    span, token = started
    if token is not None:
        detach_span(started)
    known = call.record
    span.set_attribute("llmguard.retries", known.retries)
    for key in ("cache", "fallback", "rejected_by", "delayed_by"):
        value = getattr(known, key)
        if value is not None:
            span.set_attribute(f"llmguard.{key}", str(value))
    usage = known.usage
    if usage is not None and known.billable:
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        for kind in ("cache_read", "cache_creation"):  # prompt-cache parts of the input
            if tokens := getattr(usage, f"{kind}_tokens", 0):
                span.set_attribute(f"gen_ai.usage.{kind}.input_tokens", tokens)
    if isinstance(exc, Exception):
        _fail(span, exc)
        leaf = error_leaf(exc)
        if isinstance(leaf, AdmissionError) and known.rejected_by is None:
            span.set_attribute("llmguard.rejected_by", type(leaf).__name__)
    elif exc is not None:
        span.set_attribute("llmguard.outcome", "cancelled")
    span.end()


def _end_cancelled(span: Any, task: asyncio.Task[Any] | None, level: int, end: int) -> None:
    """End an attempt span whose attempt was cancelled, once the cancellation has unwound.

    A timeout (the Timeout layer's timer, as ``asyncio.timeout``) turns the cancellation into a
    TimeoutError and *uncancels* the task on the way out; a caller's cancellation keeps
    the task cancelling. Both unwind synchronously, so one loop turn later the count tells them
    apart: a timed-out attempt ends in error, a cancelled one does not.
    """
    from opentelemetry.trace import Status, StatusCode

    if task is not None and task.cancelling() < level:
        span.set_attribute("error.type", "TimeoutError")
        span.set_status(Status(StatusCode.ERROR, "the attempt timed out"))
    else:
        span.set_attribute("llmguard.outcome", "cancelled")
    span.end(end_time=end)


def attempt_spans(metrics: MetricsView, terminal: Handler) -> Handler:
    """Wrap the terminal handler so each attempt at the provider runs in a CLIENT span."""
    from opentelemetry import context, trace

    tracer = metrics.tracer
    client = trace.SpanKind.CLIENT

    async def attempt(call: Call) -> Any:
        attrs = _attributes(metrics, call)
        attrs["llmguard.attempt"] = call.attempt
        model = attrs.get("gen_ai.request.model")
        operation = attrs["gen_ai.operation.name"]
        span = tracer.start_span(f"{operation} {model}" if model else operation, kind=client,
                                 attributes=attrs)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = await terminal(call)
        except Exception as exc:
            _fail(span, exc)
            span.end()
            raise
        except BaseException:
            task = asyncio.current_task()
            level = task.cancelling() if task is not None else 0
            asyncio.get_running_loop().call_soon(_end_cancelled, span, task, level,
                                                 time.time_ns())
            raise
        finally:
            context.detach(token)
        if isinstance(result, Stream):
            def end(error: BaseException | None) -> None:
                if isinstance(error, Exception):
                    _fail(span, error)
                span.end()

            result.defer(end)
            return result
        response_model = getattr(result, "model", None)
        if response_model is None and isinstance(result, dict):
            response_model = result.get("model")
        if isinstance(response_model, str):
            span.set_attribute("gen_ai.response.model", response_model)
        span.end()
        return result

    return attempt
