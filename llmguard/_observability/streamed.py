"""How a Metrics layer follows a streamed answer: time to the first chunk, time per chunk, and
the call's duration, usage and outcome when the stream ends."""

from __future__ import annotations

import weakref
from typing import Any

from .._core.call import Call, loop_of
from .._core.stream import Stream
from .spans import detach_span, end_span

__all__ = ["follow"]


def follow(layer: Any, call: Call, stream: Stream, start: float, span: Any) -> None:
    """``layer`` (a Metrics) got a streamed answer: time to first chunk now, time per chunk as they arrive, the call's
    duration, usage and outcome when the stream ends."""
    loop_time = (call.loop or loop_of(call)).time
    previous = loop_time()
    known = call.record
    instruments = layer._instruments
    if instruments.recording and known.billable:
        attrs = layer._series_for(call.kwargs, known, None, None, "success").attrs
        instruments.first_chunk.record(previous - start, attrs)
        per_chunk = instruments.per_chunk
        seen = 0

        def chunk(_chunk: Any) -> None:
            nonlocal previous, seen
            seen += 1
            if seen > 1:  # the first chunk's time is time_to_first_chunk
                now = loop_time()
                per_chunk.record(now - previous, attrs)
                previous = now

        stream.on_chunk(chunk)
    if span is not None:
        span = detach_span(span)  # the stream ends in the consumer's context, not this one

    # The callbacks hold the stream weakly: a stream holding callbacks that hold it is a
    # cycle, and a stream dropped unread would then give back what the layers below hold
    # (permits, reservations) only when the cyclic collector runs, not when it is dropped.
    ref = weakref.ref(stream)

    def end(error: BaseException | None) -> None:
        layer._in_flight -= 1
        finished = ref() if error is None else None  # read to its end: still alive
        if finished is not None:
            call.record.usage = finished.usage
            layer._finish(call, loop_time() - start, finished.usage_chunk, None)
        elif error is None:
            layer._finish(call, loop_time() - start, None, None)
        elif isinstance(error, Exception):
            layer._finish(call, loop_time() - start, None, error)
        else:  # the consumer closed, dropped or was cancelled: like a cancelled call
            layer._cancelled(call)
        if span is not None:
            end_span(span, call, error)

    stream.defer(end)
