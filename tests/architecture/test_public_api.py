"""programs/ and optimizers/ use only the library's public API.

Public means: a name without a leading underscore, from a module path without one; from a package
that declares ``__all__`` (``fusion_dspy``, ``fusion_dspy.aggregate``, ``fusion_dspy.lm``, ``fusion_dspy.records``,
``fusion_dspy.select``) only through the package, and only names in its ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = sorted(p for folder in ("programs", "optimizers") for p in (REPO / folder).glob("*.py"))


def _declares_all(module: str) -> list[str] | None:
    return getattr(importlib.import_module(module), "__all__", None)


def _violations(path: Path, root: Path = REPO) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("fusion_dspy"):
            continue
        parts = node.module.split(".")
        where = f"{path.relative_to(root)}:{node.lineno}"
        if any(p.startswith("_") for p in parts):
            out.append(f"{where}: private module {node.module}")
            continue
        for depth in range(1, len(parts)):  # a package with __all__ is used through its surface
            package = ".".join(parts[:depth])
            if _declares_all(package) is not None and depth > 1:
                out.append(f"{where}: {node.module} is inside {package}; import from {package}")
        exported = _declares_all(node.module)
        for alias in node.names:
            if alias.name.startswith("_"):
                out.append(f"{where}: private name {node.module}.{alias.name}")
            elif exported is not None and alias.name not in exported:
                out.append(f"{where}: {alias.name} is not in {node.module}.__all__")
    return out


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_only_public_names_of_the_library(path):
    assert _violations(path) == []


def test_the_check_sees_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from fusion_dspy.types import _jsonable\nfrom fusion_dspy.lm.endpoints import Endpoint\nfrom fusion_dspy.aggregate import Nope\n")
    found = "\n".join(_violations(bad, tmp_path))
    assert "private name fusion_dspy.types._jsonable" in found
    assert "import from fusion_dspy.lm" in found and "Nope is not in fusion_dspy.aggregate.__all__" in found
