"""The layers of `shared/` point one way (docs/architecture.md, "Layers"): the domain imports no
platform, CLI, developer tooling or service; the contracts may add the domain, nothing else of
shared; nothing in shared names a service; the services never need shared.dev (the image does
not ship it); no service imports another service; no module imports a private name (`_x`) of
another.

Read from the source (AST), so a lazy import inside a function counts, and so does a dotted
module name in a string (importlib, entry points written as code)."""
from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "contracts", "platform", "cli", "dev")
DOTTED = re.compile(r"^(?:shared|services)(?:\.\w+)+(?::\w+)?$")

# layer -> module prefixes it must not import
FORBIDDEN = {
    "shared/domain": ("shared.platform", "shared.cli", "shared.dev", "services"),
    "shared/contracts": ("shared.platform", "shared.cli", "shared.dev", "services"),
    "shared": ("services",),
    "services": ("shared.dev",),
}


@functools.lru_cache(maxsize=None)
def _parsed(path: Path, mtime_ns: int) -> tuple[ast.AST, ...]:
    return tuple(ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))))


def _nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of the module's AST, parsed and walked once per session (several checks read
    the same files)."""
    return _parsed(path, path.stat().st_mtime_ns)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of `path`, relative ones made absolute, and of every string
    that is a dotted module name of the project."""
    nodes = _nodes(path)
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    # `("-m", "services.sla", ...)`: a command line that starts a service as a process (the
    # local stack does), not an import
    run_as_main = {id(b) for node in nodes if isinstance(node, (ast.Tuple, ast.List))
                   for a, b in zip(node.elts, node.elts[1:])
                   if isinstance(a, ast.Constant) and a.value == "-m"}
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and DOTTED.match(node.value) and id(node) not in run_as_main):
            found.append((node.lineno, node.value.split(":")[0]))
    return found


def _violations(top: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((ROOT / top).rglob("*.py")):
        for line, mod in _imports(path):
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)}:{line}: {mod}")
    return out


def test_shared_is_split_into_named_layers():
    flat = sorted(p.name for p in (ROOT / "shared").glob("*.py") if p.name != "__init__.py")
    assert flat == [], "modules belong in a layer of shared/, not at its top"
    for layer in LAYERS:
        assert (ROOT / "shared" / layer / "__init__.py").is_file(), layer
        assert len(list((ROOT / "shared" / layer).rglob("*.py"))) > 1, f"shared/{layer} holds no module"


@pytest.mark.parametrize("top", sorted(FORBIDDEN))
def test_dependencies_point_one_way(top):
    assert _violations(top, FORBIDDEN[top]) == []


# The dashboard is the supervisors' read side over sla's projections and notify's store (and
# acknowledges through notify's service): it may read the services it shows. No other service
# imports another; what two services share is a contract in shared/ (e.g. shared.contracts.alerting).
READS_OTHER_SERVICES = {"dashboard": ("sla", "notify")}


def _services() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "services").glob("*/__init__.py"))


@pytest.mark.parametrize("service", _services())
def test_no_service_imports_another_service(service):
    allowed = READS_OTHER_SERVICES.get(service, ())
    others = tuple(f"services.{s}" for s in _services() if s != service and s not in allowed)
    assert _violations(f"services/{service}", others) == []


def test_the_checker_sees_lazy_imports_and_dotted_strings(tmp_path, monkeypatch):
    """The rule above would pass vacuously if the AST walk missed imports inside functions,
    relative imports or module names given as strings: check it on a module that has them all
    (and a command line starting a service, which is no import)."""
    pkg = tmp_path / "shared" / "domain"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text('def f():\n    from shared.platform import config\n'
                                'NAME = "services.sla.cli:register"\n'
                                'ARGS = ("-m", "services.sla")\n'
                                'from ..platform import clock\n', encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert sorted(_violations("shared/domain", FORBIDDEN["shared/domain"])) == [
        "shared/domain/bad.py:2: shared.platform",
        "shared/domain/bad.py:2: shared.platform.config",
        "shared/domain/bad.py:3: services.sla.cli",
        "shared/domain/bad.py:5: shared.platform",
        "shared/domain/bad.py:5: shared.platform.clock",
    ]


def test_no_module_imports_a_private_name_of_another():
    """What two modules share is public, named as such."""
    found = []
    for top in ("services", "shared", "tests"):
        for path in (ROOT / top).rglob("*.py"):
            for node in _nodes(path):
                if isinstance(node, ast.Import):
                    found += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names
                              if a.name.startswith(("services", "shared", "helpers"))
                              and any(p.startswith("_") and not p.startswith("__")
                                      for p in a.name.split("."))]
                    continue
                if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                    continue
                mod = node.module or ""
                if node.level == 0 and not mod.startswith(("services", "shared", "helpers")):
                    continue                 # third-party and the standard library
                found += [f"{path.relative_to(ROOT)}: from {'.' * node.level}{mod} import {a.name}"
                          for a in node.names if a.name.startswith("_")]
                if any(p.startswith("_") and not p.startswith("__") for p in mod.split(".")):
                    found.append(f"{path.relative_to(ROOT)}: from {mod} import …")
    assert found == []
