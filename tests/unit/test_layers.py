"""The package's layers import downward only, so each part can be read, tested and replaced without the ones above.

Types and rules first; then the wire adapters and the cluster (placement, sizing, the Ray connection); then the
engines; then what hosts a model; then what sends a request to a host; then the clients; then Serve and batch;
then the command line. A module may import its own package and any layer below, never one above (imports inside
functions count too: a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import aimu_ray

PACKAGE = Path(aimu_ray.__file__).parent
LAYERS = {                       # the top-level part of aimu_ray -> its layer
    "models": 0,
    "adapters": 1, "cluster": 1,
    "engines": 2,
    "hosts": 3,
    "backends": 4,
    "clients": 5,
    "deployments": 6, "batch": 6,
    "cli": 7,
    "demo": 8,                   # what the examples and the demo run: may use everything
}


PUBLIC_FACE = {"aimu_ray", "aimu_ray.aio"}       # the factories users import: the clients' own front


def _part(module: str) -> str:
    return "clients" if module in PUBLIC_FACE else module.split(".")[1]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every aimu_ray module ``path`` imports, at the top or inside a function, resolved to its absolute name."""
    module, found = _module(path), set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "aimu_ray" or name.startswith("aimu_ray.")}


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        here = _part(module)
        for target in sorted(_imports(path)):
            there = _part(target)
            if there != here and LAYERS[there] >= LAYERS[here]:
                problems.append(f"{module} (layer {LAYERS[here]}) imports {target} (layer {LAYERS[there]})")
    return problems


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(_module(path)) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), f"give {sorted(parts - set(LAYERS))} a layer"


def test_imports_go_downward_only():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule must be able to fail: an engine that imported a backend would be reported."""
    engines = tmp_path / "aimu_ray" / "engines"
    engines.mkdir(parents=True)
    (tmp_path / "aimu_ray" / "__init__.py").write_text("")
    (engines / "__init__.py").write_text("")
    (engines / "bad.py").write_text("def f():\n    from ..backends.pool import pool_backend\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "aimu_ray")
    assert upward_imports() == ["aimu_ray.engines.bad (layer 2) imports aimu_ray.backends.pool (layer 4)"]
