"""No module imports a private name (`_x`) of another module of the project: what two modules
share is public, named as such."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_imports_a_private_name_of_another():
    found = []
    for top in ("services", "shared", "tests"):
        for path in (ROOT / top).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                    continue
                mod = node.module or ""
                if node.level == 0 and not mod.startswith(("services", "shared", "helpers")):
                    continue                 # third-party and the standard library
                found += [f"{path.relative_to(ROOT)}: from {'.' * node.level}{mod} import {a.name}"
                          for a in node.names if a.name.startswith("_")]
    assert found == []
