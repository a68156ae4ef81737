"""One token estimate per gateway request: the model's RateLimit takes the tenant gate's
estimate of the very same request, and estimates anything else itself."""

import llmguard as lg
from llmguard._serve.estimate import ESTIMATE, basis, estimate


def test_the_gates_estimate_is_taken_only_for_the_same_request() -> None:
    """Same objects: the gate's figure (a sentinel proves it was not recomputed); a copy of the
    messages, other output limits, or no estimate in the context: estimated afresh."""
    request = {"model": "m", "messages": [{"role": "user", "content": "hello there"}],
               "max_tokens": 50}
    fresh = lg.estimate_tokens(**request)
    reset = ESTIMATE.set((basis(request), 12345))
    try:
        assert estimate(**request) == 12345
        assert estimate(**{**request, "model": "fallback"}) == 12345  # a fallback's call
        assert estimate(**{**request, "messages": list(request["messages"])}) == fresh
        assert estimate(**{**request, "max_tokens": 60}) == fresh + 10
    finally:
        ESTIMATE.reset(reset)
    assert estimate(**request) == fresh
