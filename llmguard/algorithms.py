"""Limit algorithms for :class:`llmguard.AdaptiveConcurrency` (``algorithm=``): pure update rules
from latency samples to a concurrency limit (Netflix concurrency-limits' ``onSample``).

::

    from llmguard.algorithms import AIMD
    lg.AdaptiveConcurrency(algorithm=AIMD(backoff=0.8))
"""

from ._admission.algorithms import AIMD, Gradient, Gradient2, LimitAlgorithm, Vegas

__all__ = ["AIMD", "Gradient", "Gradient2", "LimitAlgorithm", "Vegas"]
