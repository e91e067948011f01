"""Every contract test names its source, so the tier can be audited against Microsoft."""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).parent
# A source is a page or repository address, or an explicit statement that nothing is published.
MARKERS = ("https://", "not published", "unpublished")


def contract_tests() -> list[tuple[str, ast.AsyncFunctionDef | ast.FunctionDef]]:
    found = []
    for path in sorted(HERE.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                found.append((f"{path.name}::{node.name}", node))
    return found


def test_the_tier_is_not_empty() -> None:
    assert len(contract_tests()) >= 10


def test_every_contract_test_names_its_source() -> None:
    unsourced = [
        name
        for name, node in contract_tests()
        if not any(marker in (ast.get_docstring(node) or "") for marker in MARKERS)
    ]
    assert unsourced == []


def test_the_check_notices_a_test_without_a_source() -> None:
    node = ast.parse('def test_x():\n    """Graph does this."""\n').body[0]
    assert isinstance(node, ast.FunctionDef)
    assert not any(marker in (ast.get_docstring(node) or "") for marker in MARKERS)
