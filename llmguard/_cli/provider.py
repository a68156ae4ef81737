"""The model behind ``llmguard run``: the built-in offline fake models, or litellm for the rest.

Fake models (no network, no API key), chosen by model name:

* ``fake``: answers ``"echo: <last user message>"`` after a short simulated latency, with usage;
* ``fake-fail``: always fails with HTTP 500 (a retryable server error), to try retries and
  ``--fallback-model``;
* ``fake-429``: always answers HTTP 429 with ``retry-after: 0.01``, to try rate-limit handling;
* ``fake-hang``: never answers (until cancelled), to try ``--timeout`` and interrupting a run.

Any other model goes to ``--api-base`` when one is given (an OpenAI-compatible server: vLLM,
llama.cpp, a proxy, OpenAI itself), else to ``litellm.acompletion`` (imported only then).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from .._core.redact import add_secret, redact, redact_url
from ..integrations._litellm_layer import NO_RETRIES
from ..testing import FakeLLM, ProviderError, RateLimited

__all__ = ["FAKE_MODELS", "HTTPError", "Provider", "ProviderTimeout", "Stopped",
           "TransportError"]

#: Simulated latency of the ``fake`` model: a base plus a little per output token.
_FAKE = FakeLLM(latency=0.01, seconds_per_token=0.0005)


async def _fail(request: dict[str, Any]) -> Any:
    raise ProviderError(
        f"{request['model']} always fails (HTTP 500): a built-in test model",
        status_code=500, headers={},
    )


async def _rate_limited(request: dict[str, Any]) -> Any:
    raise RateLimited(
        f"{request['model']} is always rate limited (HTTP 429): a built-in test model",
        status_code=429, headers={"retry-after": "0.01"},
    )


async def _hang(request: dict[str, Any]) -> Any:
    await asyncio.Event().wait()


async def _echo(request: dict[str, Any]) -> Any:
    try:
        return await _FAKE.acompletion(**request)
    finally:
        _FAKE.calls.clear()  # FakeLLM records calls for test assertions; a long run must not


FAKE_MODELS = {"fake": _echo, "fake-fail": _fail, "fake-429": _rate_limited, "fake-hang": _hang}


class HTTPError(Exception):
    """An error answer from an OpenAI-compatible server, shaped for :func:`llmguard.classify`.

    ``code`` and ``body`` carry the server's structured error (``{"error": {"code": ...}}``), so
    ``insufficient_quota`` is told apart from a plain 429 without reading the message.
    """

    def __init__(self, message: str, *, status_code: int, headers: Any,
                 code: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers
        self.code = code
        self.body = body


class TransportError(ConnectionError):
    """The connection to ``--api-base`` failed or dropped (classified CONNECTION, retried)."""


class ProviderTimeout(TimeoutError):
    """The provider did not answer within ``--timeout`` (classified TIMEOUT, retried)."""


class Stopped(asyncio.CancelledError):
    """Raised instead of sending once the run is stopping (Ctrl-C): nothing more is sent, and
    the line is left unrecorded so ``--resume`` does it."""


class Provider:
    """The innermost handler of ``llmguard run``: one chat completion with the request's model.

    With ``api_base`` it posts the request as JSON to ``{api_base}/chat/completions`` over one
    pooled aiohttp session. Why not the openai SDK or litellm there: both go through httpx, which
    costs 7 to 12 ms of CPU per call on a loopback server against 0.35 ms for aiohttp, so a batch
    would top out near 100 calls/s per core, below many accounts' quotas. An OpenAI-compatible
    server needs no translation, only the HTTP call.

    The provider is also where the run knows what was *sent*: ``timeout`` bounds each attempt
    from when it is sent (never time queued for quota), :attr:`sending` holds the tasks whose
    request is at the provider (they get ``--grace`` on Ctrl-C, the others are cancelled at
    once), and :meth:`close` makes every later attempt raise :class:`Stopped` before it is sent.
    ``on_headers(headers)`` sees every HTTP answer's headers (rate-limit headers are learned
    from them).
    """

    __slots__ = ("_litellm", "_session", "api_base", "api_key", "closed", "on_headers",
                 "sending", "sent", "timeout")

    def __init__(self, api_base: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = None,
                 on_headers: Callable[[Any], None] | None = None) -> None:
        self.api_base = api_base.rstrip("/") if api_base else None
        self.api_key = api_key
        add_secret(api_key)  # hidden in what this process writes (a Ray actor's too)
        self.timeout = timeout
        self.on_headers = on_headers
        #: Tasks whose attempt is at the provider right now.
        self.sending: set[asyncio.Task[Any]] = set()
        #: Attempts sent so far (the quota used).
        self.sent = 0
        #: True once the run is stopping: nothing more is sent.
        self.closed = False
        self._session: Any = None
        self._litellm: Any = None

    def open(self, model: str | None = None) -> None:
        """Import what the first attempts need before any is admitted: an import inside the
        first call (aiohttp ~0.1 s, litellm ~1 s) holds the opening burst past the time the
        rate limit counted it, so the provider's window sees it late and overlaps the next."""
        if self.api_base is not None:
            self._open_session()
        elif model is not None and model not in FAKE_MODELS:
            self._backend(model)

    def _open_session(self) -> Any:
        if self._session is None:
            import aiohttp

            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=0)
            )
        return self._session

    def close(self) -> None:
        """Send nothing more (Ctrl-C); attempts already sent carry on."""
        self.closed = True

    async def __call__(self, **request: Any) -> Any:
        if self.closed:
            raise Stopped("llmguard run is stopping: not sent")
        model = request.get("model")
        send = self._backend(model)
        task = asyncio.current_task()
        assert task is not None
        self.sending.add(task)
        self.sent += 1
        try:
            async with asyncio.timeout(self.timeout) as limit:
                return await send(request)
        except TimeoutError:
            if limit.expired():  # ours, not the caller's or an inner library's own timeout
                raise ProviderTimeout(f"{model} did not answer within --timeout "
                                      f"{self.timeout:g} s") from None
            raise
        finally:
            self.sending.discard(task)

    def _backend(self, model: Any) -> Callable[[dict[str, Any]], Awaitable[Any]]:
        fake = FAKE_MODELS.get(model)
        if fake is not None:
            return fake
        if self.api_base is not None:
            return self._post
        if self._litellm is None:  # imported once, before any attempt's clock starts
            import litellm

            self._litellm = litellm
        return self._via_litellm

    async def _via_litellm(self, request: dict[str, Any]) -> Any:
        # The pipeline's Retry layer retries; litellm and the OpenAI client it drives must not
        # also retry, or attempts multiply (3 x 3) and every backoff hides from our accounting.
        extra: dict[str, Any] = dict(NO_RETRIES)
        if self.api_key:
            extra["api_key"] = self.api_key
        return await self._litellm.acompletion(**{**extra, **request})

    async def _post(self, request: dict[str, Any]) -> Any:
        import aiohttp

        session = self._open_session()
        url = f"{self.api_base}/chat/completions"
        where = redact_url(self.api_base or "")
        try:
            async with session.post(url, json=request) as r:
                if self.on_headers is not None:
                    self.on_headers(r.headers)
                raw = await r.read()
                status, headers = r.status, r.headers
        except aiohttp.ClientConnectionError as exc:  # refused, reset, dropped mid-answer
            raise TransportError(f"connection to {where} failed: "
                                 f"{type(exc).__name__}: {redact(str(exc))}") from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                message, code = error.get("message"), error.get("code") or error.get("type")
            else:  # an HTML 502 from a proxy: keep the status, show the start of the body
                message, code = raw[:200].decode("utf-8", "replace").strip(), None
            raise HTTPError(f"HTTP {status} from {where}: {redact(str(message))}",
                            status_code=status, headers=headers,
                            code=code if isinstance(code, str) else None, body=body)
        if body is None:
            raise HTTPError(f"HTTP {status} from {where}: the answer is not JSON "
                            f"({raw[:80]!r})", status_code=502, headers=headers)
        return body

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
