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


def test_import_loads_no_layer_module_and_no_asyncio() -> None:
    """Layers load on first use: `import llmguard` alone imports neither asyncio nor any layer."""
    code = (
        "import sys, llmguard; "
        "print(','.join(m for m in ('asyncio', 'cachetools', 'llmguard._admission.ratelimit.layer', "
        "'llmguard._admission.adaptive', 'llmguard._runners.batch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
