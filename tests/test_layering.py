"""Imports flow one way: models <- platform rooms (data <- registry <- training <- evaluation) <- tune / serve <- CLI.

Parses every module's imports (including imports inside functions) with ast; no module is executed.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "stocktrend"

# Layer of every package area; a module may import only areas with a layer <= its own (same area allowed).
LAYERS = {
    "models": 0,
    "platform.data": 1,
    "platform.console": 2,
    "platform.registry": 2,
    "platform.training": 3,
    "platform.evaluation": 4,
    "tune": 5,
    "serve": 5,
    "quickstart": 6,
    "cli": 7,
    "__main__": 7,
}


def area(module: str) -> str | None:
    """'stocktrend.platform.data.cache' -> 'platform.data'; None for stocktrend itself and unknown areas."""
    parts = module.split(".")[1:]
    for n in (2, 1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key
    return None


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("stocktrend."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("stocktrend"):
            out.update(f"{node.module}.{a.name}" for a in node.names)  # 'from stocktrend.platform import console'
    return out


MODULES = sorted(p for p in PKG.rglob("*.py"))


def test_every_module_has_a_layer():
    roots = {PKG / "__init__.py", PKG / "platform" / "__init__.py"}
    missing = [str(p.relative_to(PKG)) for p in MODULES if p not in roots
               and area("stocktrend." + ".".join(p.relative_to(PKG).with_suffix("").parts)) is None]
    assert not missing, f"modules outside every layer (add them to LAYERS): {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_one_way(path: Path):
    mod = "stocktrend." + ".".join(path.relative_to(PKG).with_suffix("").parts)
    own = area(mod)
    if own is None:
        return
    upward = sorted(i for i in imports_of(path) if (a := area(i)) is not None and LAYERS[a] > LAYERS[own])
    assert not upward, f"{mod} ({own}, layer {LAYERS[own]}) imports from above it: {upward}"


def test_no_module_over_450_lines():
    long = {str(p.relative_to(PKG)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"modules over 450 lines (split where a second job hides): {long}"
