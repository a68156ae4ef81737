"""The quotas ``llmguard run`` paces to: given (``--rpm``/``--tpm``) or learned from the provider.

Without ``--rpm``/``--tpm``, the first answer's ``x-ratelimit-limit-requests`` and
``x-ratelimit-limit-tokens`` headers (OpenAI, Azure, LiteLLM's proxy, vLLM behind a gateway), or
Anthropic's ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-limit``, become the
quotas (``--input-tpm``/``--output-tpm`` for Anthropic's). Until that first answer only one call is sent, so a small quota is not
overrun by the opening burst. ``remaining-*`` with ``reset-*`` tighten the quotas as answers
come (``RateLimit.observe_headers``); when ``reset-*`` is absent (LiteLLM's proxy), the first
``remaining-*`` is taken as what is left for the next 60 s (used by others before us), and the
limits alone pace the rest (with ``--refill auto`` the rate limit reads such headers itself:
they are passed as they are). A resumed run (``--resume`` after a kill) starts with the quotas
counted as spent: the provider may still count the killed run's requests, and a bucket it
emptied refills from empty (``RateLimit.assume_spent``). 429s with ``retry-after`` /
``retry-after-ms`` /
``llm_provider-retry-after`` pause every admission (RateLimit and Retry read them).

Under a token quota, each answer's ``usage.prompt_tokens`` (the provider's own count of the
prompt) calibrates our estimate (:class:`TokenCount`): a provider that counts more than our
tokenizer (another encoding, or a rate limiter that estimates from characters) would otherwise
be sent a few percent over its quota, answered with 429s.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from typing import Any

from .._admission.concurrency import ConcurrencyLimit
from .._admission.ratelimit.layer import RateLimit
from .._core.call import Call
from .._core.layer import Handler
from .._core.tokens import extract_usage, request_tokens

__all__ = ["Limits", "TokenCount", "announce", "default_concurrency", "in_use"]

#: Prompt tokens of answers seen before the provider's count is trusted over ours.
CALIBRATE_AFTER = 1000

#: Calls in flight without ``--concurrency``: 16, or the requests quota per minute when larger,
#: at most ``MAX_CONCURRENCY``. A windowed server admits a whole minute's quota at once, and
#: fewer slots spread that burst over several round trips (16 slots at 2 s a request sent a
#: 60-request window in 8 s: 1.08x the fixed window's ideal time, 1.06x the sliding one's), or
#: cap the rate below the quota (16 slots at 10 s a request: 96 a minute of an rpm of 500).
DEFAULT_CONCURRENCY, MAX_CONCURRENCY = 16, 1024


def default_concurrency(rpm: int | None) -> int:
    """Calls in flight for a requests quota of ``rpm`` (None: none known)."""
    return max(DEFAULT_CONCURRENCY, min(rpm or 0, MAX_CONCURRENCY))


class TokenCount:
    """Tokens a request is charged: ``count`` (default :func:`request_tokens`) with its prompt
    part scaled by how the provider counts prompts.

    The factor is the provider's ``usage.prompt_tokens`` over our prompt estimates, summed over
    every answer so far; at least 1 (counting more than the provider only paces a little more
    carefully, counting less sends over its quota) and at most 4.
    """

    __slots__ = ("count", "estimated", "reported")

    def __init__(self, count: Callable[..., int] = request_tokens) -> None:
        self.count = count
        #: Our prompt estimates and the provider's counts of the answers observed.
        self.estimated = self.reported = 0

    @property
    def factor(self) -> float:
        if self.estimated < CALIBRATE_AFTER:
            return 1.0
        return min(4.0, max(1.0, self.reported / self.estimated))

    def _prompt(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        return self.count(*args, **{**kwargs, "max_tokens": 0})  # what usage.prompt_tokens counts

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        total = self.count(*args, **kwargs)
        factor = self.factor
        if factor == 1.0:
            return total
        return total + math.ceil(self._prompt(args, kwargs) * (factor - 1))

    def observe(self, call: Call, result: Any) -> None:
        """Compare the provider's count of this answer's prompt with ours."""
        usage = extract_usage(result)
        if usage is None or not isinstance(usage.input_tokens, int) or usage.input_tokens <= 0:
            return
        self.estimated += self._prompt(call.args, call.kwargs)
        self.reported += usage.input_tokens

    def __repr__(self) -> str:
        return f"<TokenCount factor={self.factor:.3f} over {self.estimated} prompt tokens>"


def _int(value: Any) -> int | None:
    if value is None:  # the header is absent: the common case, without raising
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):  # ("inf": no number)
        return None
    return number if number > 0 else None


class Limits:
    """Layer: the run's rate limit (given, learned, or none), fed by every answer's headers."""

    __slots__ = ("_first", "_kwargs", "_resumed", "_seeded", "_sent_at", "announce", "inner",
                 "learn", "on_learned", "rpm", "source", "tokens", "tpm")

    def __init__(self, *, rpm: int | None, tpm: int | None, learn: bool,
                 announce: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        #: Quotas in use (None: none) and where they come from.
        self.rpm, self.tpm = rpm, tpm
        given = rpm or tpm or kwargs.get("input_tpm") or kwargs.get("output_tpm")
        self.source = "--rpm/--tpm" if given else None
        #: Learn quotas from headers (only when none were given).
        self.learn = learn and not given
        #: The token estimate, calibrated by the answers' usage.
        self.tokens = TokenCount(kwargs.pop("tokens", request_tokens))
        # Waiting for quota is never a failure.
        self._kwargs = {"max_wait": None, **kwargs, "tokens": self.tokens}
        self.inner: RateLimit | None = (RateLimit(rpm=rpm, tpm=tpm, **self._kwargs)
                                        if given else None)
        self.announce = announce
        #: Called with the requests quota (or None) once the quotas are learned.
        self.on_learned: Callable[[int | None], None] | None = None
        self._seeded = self._resumed = False
        self._sent_at = 0.0  # when the call the quotas are learned from was sent
        # Until the first answer says the quotas, one call at a time.
        self._first: asyncio.Lock | None = asyncio.Lock() if self.learn else None

    def assume_spent(self) -> None:
        """This run resumes a killed one: count the quotas as spent (now, or when learned)."""
        self._resumed = True
        if self.inner is not None:
            self.inner.assume_spent()

    def slots(self, pipeline: Any, *, follow: bool) -> Any:
        """``pipeline``'s concurrency limiter (None: adaptive); with ``follow``, resized to the
        requests quota when it is learned (:func:`default_concurrency`)."""
        slots = next((layer.limiter for layer in pipeline.layers
                      if isinstance(layer, ConcurrencyLimit)), None)
        if follow and slots is not None:
            def resize(rpm: int | None) -> None:
                slots.limit = default_concurrency(rpm)
                if self.announce is not None:
                    self.announce(f"llmguard run: concurrency {slots.limit} (follows the "
                                  "requests quota)")

            self.on_learned = resize
        return slots

    def describe(self) -> str:
        if self.inner is None:
            return ("none yet (learned from the provider's x-ratelimit headers)" if self.learn
                    else "none")
        parts = [f"{name}={value}" for name, value in (
            ("rpm", self.rpm), ("tpm", self.tpm), ("input_tpm", self._kwargs.get("input_tpm")),
            ("output_tpm", self._kwargs.get("output_tpm"))) if value]
        return f"{' '.join(p for p in parts if p)} ({self.source})"

    async def __call__(self, call: Call, call_next: Handler, /) -> Any:
        first = self._first
        if first is not None:
            async with first:
                if self._first is not None:  # still nothing learned: this call goes alone
                    self._sent_at = asyncio.get_running_loop().time()
                    try:
                        return await self._send(call, call_next)
                    finally:
                        self._first = None  # an answer (or failure) came: stop serialising
        return await self._send(call, call_next)

    async def _send(self, call: Call, call_next: Handler) -> Any:
        if self.inner is None:
            return await call_next(call)
        result = await self.inner(call, call_next)
        if self.tpm:
            self.tokens.observe(call, result)
        return result

    def observe_response(self, call: Call) -> None:
        """Read one answer's headers (:class:`~llmguard.HeaderObserver`: every HTTP answer)."""
        headers = call.response_headers
        get = getattr(headers, "get", None)
        if get is None:
            return
        reset = any(get(name) is not None for name in _RESETS)
        # it read them already, inline, as they came (read here too: two readings an answer)
        read = self.inner is not None
        if self.learn and self.inner is None:
            rpm = _int(get("x-ratelimit-limit-requests") or get(
                "anthropic-ratelimit-requests-limit"))
            tpm = _int(get("x-ratelimit-limit-tokens"))
            # Anthropic limits input and output tokens apart, and gives unused output back.
            split = {f"{part}_tpm": _int(get(f"anthropic-ratelimit-{part}-tokens-limit"))
                     for part in ("input", "output")}
            if rpm or tpm or any(split.values()):
                if any(split.values()):
                    self._kwargs |= {**split, "charge": "actual"}
                self.rpm, self.tpm, self.source = rpm, tpm, "learned from x-ratelimit headers"
                self.inner = RateLimit(rpm=rpm, tpm=tpm, **self._kwargs)
                if self._resumed:
                    self.inner.assume_spent()
                else:  # the server counts the call that told us: so must the quotas
                    self.inner.assume_sent(call, at=self._sent_at)
                if self.announce is not None:
                    self.announce(f"llmguard run: limits in use: {self.describe()}")
                if self.on_learned is not None:
                    self.on_learned(rpm)
        if self.inner is None:
            return
        auto = self._kwargs.get("refill", "auto") == "auto"
        if auto or reset:  # it reads them as they are
            self._seeded = self._seeded or not auto
            if not read:
                self.inner.observe_headers(headers)
            return
        if self._seeded:
            return
        # No reset time: assume what remains now is all we get for the next minute (the safe
        # reading); after that our own sliding window paces to the limits.
        headers = {k: get(k) for k in ("x-ratelimit-remaining-requests",
                                       "x-ratelimit-remaining-tokens") if get(k) is not None}
        headers |= {"x-ratelimit-reset-requests": "60s", "x-ratelimit-reset-tokens": "60s"}
        self._seeded = True
        self.inner.observe_headers(headers)


#: The headers that say when a quota resets (without one, a reading's is supposed: ``60s``).
_RESETS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens",
           "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset")


def announce(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def in_use(limits: Any, spec: Any, follow: bool) -> str:
    """The run's first line: the limits it paces to (its own, or each deployment's, a
    Router's) and its concurrency (``follow``: it follows the requests quota)."""
    paced = limits.describe() if isinstance(limits, Limits) else "deployments " + ", ".join(
        d.describe() for d in limits.deployments)
    slots = "adaptive" if spec.adaptive else f"{spec.concurrency}" + (
        " (follows the requests quota)" if follow else "")
    return f"llmguard run: limits in use: {paced}; concurrency {slots}"
