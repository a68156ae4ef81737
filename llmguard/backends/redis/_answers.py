"""What :class:`~llmguard.backends.redis.RedisBackend` does with what the provider says: its
answers' rate-limit headers and its 429s."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..._admission.ratelimit.window import Quota
from . import _bucket_scripts, _scripts

__all__ = ["Answers"]


class Answers:
    """What :class:`~llmguard.backends.redis.RedisBackend` does with what the provider says
    (``llmguard._admission.ratelimit.backend.LearningBackend``): under ``refill="auto"`` header
    readings and 429s are learned from (``_learning.RedisLearning``); under the other refills a
    reading is a cap (or drains the buckets) and a 429 a pause."""

    __slots__ = ()

    def pause(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float) -> None:
        self._local.pause(key, quotas, seconds)
        self.connection.spawn(self.connection.write(
            _scripts.PAUSE, self._key(key)[1:], [seconds], "pausing after a 429",
        ))

    def cap(
        self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int, reset: float
    ) -> None:
        self._local.cap(key, quotas, tokens, remaining, reset)
        if quotas[0].continuous:  # the provider's bucket holds `remaining`: drain ours to it
            self.connection.spawn(self.connection.write(
                _bucket_scripts.DRAIN, self._key(key)[1:],
                [int(tokens), remaining, *self._quota_args(quotas)[2:]],
                "recording provider headers"))
            return
        self.connection.spawn(self.connection.write(
            _scripts.CAP, self._key(key)[1:], ["t" if tokens else "r", remaining, reset],
            "recording provider headers",
        ))

    def observe(self, key: Hashable, quotas: tuple[Quota, ...], tokens: bool, remaining: int,
                reset: float | None, *, ticket: Any = None, limit: int | None = None,
                as_of_now: bool = False) -> None:
        if quotas[0].learn:
            self._learning.observe(key, quotas, tokens, remaining, reset, ticket, limit,
                                   self._key(key), as_of_now)
        elif reset is not None:
            self.cap(key, quotas, tokens, remaining, reset)

    def refused(self, key: Hashable, quotas: tuple[Quota, ...], seconds: float, *,
                ticket: Any = None, named: Any = None) -> None:
        if quotas[0].learn:
            self._learning.refused(key, quotas, seconds, ticket, self._key(key), named)
        else:
            self.pause(key, quotas, seconds)

    def unsaid(self, key: Hashable, quotas: tuple[Quota, ...]) -> None:
        """The server answered without any rate-limit header: it may be probed, once for every
        process (``_silent``: this process's next settlement or reservation of ``key`` says
        so, its mirror's shape being quiet; that mirror probes on its own in an outage)."""
        if quotas[0].learn:
            self._local.unsaid(key, quotas)

    def spent(self, key: Hashable, quotas: tuple[Quota, ...]) -> None:
        """Count every quota of ``key`` as used up now, for every process sharing it
        (``RateLimit.assume_spent``): as in memory, buckets drained (the auto ones too) and
        windows capped at nothing for a window."""
        self._seen.pop(key, None)  # the headroom cached from the last reservation is gone
        if quotas[0].learn:
            self._learning.spent(key, quotas, self._key(key))
            return
        for tokens in {q.tokens for q in quotas}:  # a cap drains the continuous buckets
            self.cap(key, quotas, tokens, 0, max(q.window for q in quotas))

    def shape(self, key: Hashable, quotas: tuple[Quota, ...]) -> str:
        """What this process learned or adopted for ``key`` (its window in memory)."""
        return self._local.shape(key, quotas)

    def limits(self, key: Hashable, quotas: tuple[Quota, ...]) -> tuple[int | None, int | None]:
        return self._local.limits(key, quotas)
