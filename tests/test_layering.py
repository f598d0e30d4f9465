"""Imports flow one way: models <- platform rooms (data <- registry <- training <- evaluation) <- tune / serve <- loop
<- quickstart <- CLI.

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
    "platform.ports": 1,
    "platform.console": 2,
    "platform.processes": 2,
    "platform.raytoken": 2,
    "platform.registry": 2,
    "platform.training": 3,
    "platform.evaluation": 4,
    "tune": 5,
    "serve": 5,
    "loop": 6,
    "quickstart": 7,
    "cli": 8,
    "__main__": 8,
    "loop.__main__": 8,  # python -m stocktrend.loop: the CLI's entry point for Ray Jobs
}


def area(module: str) -> str | None:
    """'stocktrend.platform.data.cache' -> 'platform.data'; None for stocktrend itself and unknown areas."""
    parts = module.split(".")[1:]
    for n in (2, 1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key
    return None


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: a module's entry point (``python -m ...``), not an import of the library."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__" and len(node.test.comparators) == 1
            and isinstance(node.test.comparators[0], ast.Constant) and node.test.comparators[0].value == "__main__")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    guards = [n for n in tree.body if _is_main_guard(n)]
    skipped = {id(n) for g in guards for n in ast.walk(g)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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


def _graph() -> dict[str, set[str]]:
    """Module -> the stocktrend modules it imports (a ``from package import name`` counts the submodule when ``name``
    is one, else the package module)."""
    names = {"stocktrend." + ".".join(p.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__"): p
             for p in MODULES}
    graph = {}
    for mod, path in names.items():
        deps = set()
        for imp in imports_of(path):
            deps.add(imp if imp in names else imp.rsplit(".", 1)[0])
        graph[mod] = {d for d in deps if d in names and d != mod}
    return graph


def test_no_import_cycles():
    """No two modules import each other, directly or through others (Tarjan's strongly connected components)."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other (move what both need to where it belongs): {cycles}"


def test_the_zoo_is_a_list_of_specs_without_string_dispatch():
    """Issue 27: zoo.py lists specs (no importlib, no per-kind branches); nothing outside stocktrend/models compares a
    model's name to decide what to do."""
    import re
    zoo = (PKG / "models" / "zoo.py").read_text()
    assert "importlib" not in zoo
    assert not re.search(r"\bkind\s*(==|!=)|\bkind\s+(not\s+)?in\s*[(\[{]", zoo)
    from stocktrend.models import zoo as zoo_mod
    kinds = "|".join(zoo_mod.KINDS)
    pattern = re.compile(rf"""(==|!=)\s*["']({kinds})["']|["']({kinds})["']\s*(==|!=)|\bin\s*\(["']({kinds})["']""")
    hits = [f"{p.relative_to(PKG)}:{i}" for p in MODULES if "models" not in p.relative_to(PKG).parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, f"model names compared outside stocktrend/models (ask the ModelSpec instead): {hits}"
