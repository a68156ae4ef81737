"""The public namespace: sorted, complete, and light to import."""

import subprocess
import sys

import llmguard


def test_all_is_sorted() -> None:
    """__all__ is sorted so additions stay reviewable."""
    assert llmguard.__all__ == sorted(llmguard.__all__)


def test_all_names_resolve() -> None:
    """Every name in __all__ exists on the package."""
    missing = [name for name in llmguard.__all__ if not hasattr(llmguard, name)]
    assert not missing


def test_public_names_are_exported() -> None:
    """Every public (non-module) attribute of the package is listed in __all__."""
    import types

    public = {
        name
        for name, value in vars(llmguard).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(llmguard.__all__), public - set(llmguard.__all__)


def test_fixed_public_names() -> None:
    """The names ARCHITECTURE.md fixes are all importable from llmguard."""
    fixed = {"guard", "Pipeline", "Call", "Layer", "classify", "FailureKind", "Failure",
             "LLMGuardError"}
    assert fixed <= set(llmguard.__all__)


def test_version_is_available() -> None:
    """__version__ comes from the installed distribution metadata."""
    assert isinstance(llmguard.__version__, str) and llmguard.__version__


def test_import_is_light() -> None:
    """`import llmguard` pulls in none of the heavy optional dependencies."""
    heavy = ["litellm", "openai", "redis", "httpx", "opentelemetry.sdk", "tqdm",
             "prometheus_client"]
    code = (
        "import sys, llmguard; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_subpackages_are_reached_from_the_top_level_name() -> None:
    """After only ``import llmguard as lg``, ``lg.backends.MemoryBackend`` and the other public
    subpackages resolve (imported on first use, not by ``import llmguard``)."""
    code = ("import sys, llmguard as lg; loaded = 'llmguard.backends' in sys.modules; "
            "print(loaded, lg.backends.MemoryBackend.__name__, lg.testing.FakeLLM.__name__, "
            "lg.integrations.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "MemoryBackend", "FakeLLM", "llmguard.integrations"]


def test_import_loads_no_layer_module_and_no_asyncio() -> None:
    """Layers load on first use: `import llmguard` alone imports neither asyncio nor any layer."""
    code = (
        "import sys, llmguard; "
        "print(','.join(m for m in ('asyncio', 'cachetools', 'llmguard._admission.ratelimit.layer', "
        "'llmguard._admission.adaptive', 'llmguard._runners.batch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


#: Names that left the top level for a namespace of their own, and where they went.
MOVED = {
    "llmguard.algorithms": ["AIMD", "Gradient", "Gradient2", "LimitAlgorithm", "Vegas"],
    "llmguard.stats": ["AdaptiveStats", "CacheStatistics", "CircuitStats", "ConcurrencyStats",
                       "FallbackStats", "MemberStats", "MetricsStats", "PoolStats",
                       "RateLimitStats", "RetryStats", "TimeoutStats"],
    "llmguard.backends": ["CacheStore", "CircuitStore", "ConcurrencyLimiter", "Limiter",
                          "MemoryBackend", "MemoryStore", "Quota", "RateLimitBackend"],
}


def test_moved_names_still_work_with_a_deprecation_warning() -> None:
    """Each moved name is in its namespace's sorted ``__all__``, no longer in the top level's,
    and ``llmguard.<name>`` still returns the same object for one release, warning where to
    import it from."""
    import importlib

    import pytest

    for home, names in MOVED.items():
        namespace = importlib.import_module(home)
        assert namespace.__all__ == sorted(namespace.__all__)
        for name in names:
            assert name in namespace.__all__ and name not in llmguard.__all__
            with pytest.warns(DeprecationWarning, match=f"llmguard.{name} moved to {home}"):
                old = getattr(llmguard, name)
            assert old is getattr(namespace, name)
            assert getattr(namespace, name).__module__ == home  # what repr and pickle say


def test_the_top_level_is_small() -> None:
    """The top level holds the layers, the pipeline, the errors and the call's seams (at most 60
    names: 56, then Router, Deployment, Budget and BudgetExceeded; it had 78 before algorithms,
    statistics and backends moved out)."""
    assert len(llmguard.__all__) <= 60


def test_every_layer_snapshot_derives_from_layer_stats() -> None:
    """Each statistics class is a LayerStats, and each field Metrics reads by name is declared
    in ``LayerStats.GAUGES`` and used by at least one of them (no alias, no stale name)."""
    import dataclasses

    import llmguard.stats as stats

    classes = [getattr(stats, name) for name in stats.__all__ if name != "LayerStats"]
    assert all(issubclass(cls, stats.LayerStats) for cls in classes)
    fields = {f.name for cls in classes for f in dataclasses.fields(cls)}
    assert set(stats.LayerStats.GAUGES) <= fields, set(stats.LayerStats.GAUGES) - fields
