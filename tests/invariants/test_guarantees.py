"""The README's Guarantees section names only tests that exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def named_tests() -> list[tuple[str, str]]:
    section = ROOT.joinpath("README.md").read_text().split("## Guarantees", 1)[1]
    found, current = [], None
    for path, name in re.findall(r"`(?:tests/(?:\w+/)?)?(test_\w+\.py)?::(test_\w+)`", section):
        current = path or current  # "`::name`" continues the file named before it
        found.append((current, name))
    return found


def test_every_named_test_exists() -> None:
    """Each ``file::test`` in the Guarantees section is a test function in that file."""
    names = named_tests()
    assert len(names) >= 20
    for path, name in names:
        matches = list(ROOT.joinpath("tests").rglob(path))
        assert len(matches) == 1, f"README Guarantees names {path}: found {matches}"
        tree = ast.parse(matches[0].read_text())
        defined = {node.name for node in ast.walk(tree)
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert name in defined, f"README Guarantees names {path}::{name}, which does not exist"
