"""Where ``llmguard run`` sends: the built-in offline models by name (``fake``, ``fake-fail``,
``fake-429``, ``fake-hang``; see :mod:`llmguard._upstream.fake`), else ``--api-base`` (an
OpenAI-compatible server) when one is given, else litellm; with several deployments (a Router
in the run's stack), the upstream of the deployment the Router chose. The transports live in
``_upstream``; this module adds what only a run needs: stopping cleanly and the attempt's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .._core.call import Call
from .._core.redact import add_secret
from .._upstream.attempt_timeout import Aheads
from .._upstream.config import upstream_of
from .._upstream.deployments import DEPLOYMENT, DeploymentConfig
from .._upstream.errors import Stopped
from .._upstream.fake import FAKE_MODELS, FakeUpstream, fake_model
from .._upstream.http import HTTPUpstream
from .._upstream.litellm import LitellmUpstream
from .._upstream.protocol import Upstream

__all__ = ["Provider"]


class Provider:
    """The innermost handler of ``llmguard run``: one chat completion with the request's model.

    The provider is where the run knows what was *sent*: ``timeout`` bounds each attempt from
    when it is sent (never time queued for quota) or, while the upstream answers ones sent
    before it (a proxy's queue ahead of it moving), from the last of those
    (:mod:`~llmguard._upstream.attempt_timeout`),
    :attr:`sending` holds the tasks whose request
    is at the provider (they get ``--grace`` on Ctrl-C, the others are cancelled at once), and
    :meth:`close` makes every later attempt raise :class:`Stopped` before it is sent.

    :meth:`handle` is the terminal handler of the run's pipeline (it marks the attempt sent, times
    it, and the upstream writes ``call.response_headers``, which the run's rate limit learns
    from); calling the provider with a request's keywords is the ``send(**request)`` of Ray.

    With ``deployments``, a request naming one (the Router's choice, under
    :data:`~llmguard._upstream.deployments.DEPLOYMENT`) goes to that deployment's upstream, as the
    model the deployment names (else the request's), with its key from ``keys`` (by name:
    resolved by a Ray driver) or else its ``api_key_env`` here.
    """

    __slots__ = ("ahead", "closed", "fakes", "other", "routes", "sending", "sent", "sent_at",
                 "timeout")

    def __init__(self, api_base: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = None,
                 deployments: Iterable[DeploymentConfig] = (),
                 keys: Mapping[str, str] | None = None) -> None:
        self.timeout, deployments = timeout, tuple(deployments)
        #: Where models other than the built-in fakes go.
        bounded = timeout is not None  # each attempt's own time (_attempt)
        self.other: Upstream = (HTTPUpstream(api_base, api_key, bounded=bounded) if api_base
                                else LitellmUpstream(api_key=api_key))
        #: Deployment name -> (its upstream, the model it is asked for; None: the request's).
        self.routes: dict[str, tuple[Upstream, str | None]] = {
            d.name: (upstream_of(d, (keys or {}).get(d.name),
                                 bounded=bounded or d.timeout is not None), d.model)
            for d in deployments}
        for upstream in (self.other, *(u for u, _ in self.routes.values())):
            for secret in upstream.secrets():  # hidden in what this process writes (Ray's too)
                add_secret(secret)
        self.fakes: dict[str, FakeUpstream] = {}
        #: Tasks whose attempt is at the provider right now.
        self.sending: set[asyncio.Task[Any]] = set()
        #: Attempts sent so far (the quota used), and per wall-clock second (``int(time())``).
        self.sent = 0
        self.sent_at: Counter[int] = Counter()
        #: True once the run is stopping: nothing more is sent.
        self.closed = False
        #: Per upstream: our attempts' send order and recent answers, for ``timeout`` (or a
        #: deployment's own, where shorter).
        self.ahead = Aheads(timeout, "--timeout", deployments)

    def upstream(self, model: Any) -> Upstream:
        """The upstream serving ``model``."""
        if model in FAKE_MODELS:
            fake = self.fakes.get(model)
            if fake is None:
                fake = self.fakes[model] = fake_model(model)
            return fake
        return self.other

    def open(self, model: str | None = None) -> None:
        """Import what the first attempts need before any is admitted: an import inside the
        first call (aiohttp ~0.1 s, litellm ~1 s) holds the opening burst past the time the
        rate limit counted it, so the provider's window sees it late and overlaps the next."""
        for upstream, _ in self.routes.values():
            if callable(opener := getattr(upstream, "open", None)):
                opener()
        if self.routes:
            return
        if isinstance(self.other, HTTPUpstream) or (model is not None
                                                    and model not in FAKE_MODELS):
            self.other.open()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Send nothing more (Ctrl-C); attempts already sent carry on."""
        self.closed = True

    async def handle(self, call: Call) -> Any:
        """The terminal handler: ``call.kwargs`` to the model's upstream, the attempt's time at
        the provider in ``call.record.latency`` (a :class:`~llmguard._core.layer.HandlesCalls`:
        Ray's actors use it as their terminal too)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            return await self._attempt(call.kwargs, call)
        finally:
            call.record.latency = loop.time() - start

    async def __call__(self, **request: Any) -> Any:
        return await self._attempt(request, None)

    async def _attempt(self, request: dict[str, Any], call: Call | None) -> Any:
        if self.closed:
            raise Stopped("llmguard run is stopping: not sent")
        choice = request.get(DEPLOYMENT)
        if choice is None:
            upstream = self.upstream(request.get("model"))
        else:  # the Router's choice: its upstream, as the model it serves
            upstream, target = self.routes[choice]
            request = {k: v for k, v in request.items() if k != DEPLOYMENT}
            if target is not None:
                request["model"] = target
            if call is not None:
                call.kwargs = request  # the Router restores the caller's after the attempt
        model = request.get("model")
        task = asyncio.current_task()
        assert task is not None
        if call is not None:
            call.mark_sent()
        self.sending.add(task)
        self.sent += 1
        second = int(time.time())
        self.sent_at[second] += 1
        try:
            ahead = self.ahead(upstream, choice)
            if ahead is None:
                return await upstream.chat(request, call)
            return await ahead.within(upstream.chat(request, call), model)
        except BaseException:
            if call is not None and not call.sent:  # the transport could not deliver it
                self.sent -= 1
                self.sent_at[second] -= 1
            raise
        finally:
            self.sending.discard(task)

    async def aclose(self) -> None:
        for upstream in (self.other, *(u for u, _ in self.routes.values())):
            await upstream.aclose()
