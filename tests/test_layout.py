"""The code's shape (issue 11): the rules the layout keeps, checked so that they stay kept."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def _imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_no_test_module_imports_another_test_module():
    """Shared helpers live in tests.factories (and the harnesses tests/postgres.py,
    tests/execpods.py, tests/emulator), never in a test module another one imports."""
    offenders = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for module in _imported_modules(path)
        if module.startswith("tests.test_") or module == "tests.conftest"
    }
    assert not offenders, sorted(offenders)
