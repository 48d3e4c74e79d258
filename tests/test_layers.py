"""Imports go one way: serving -> engine -> connectors / accel -> contract modules, and no module
imports itself through a cycle. Read from the source with ast, so it also catches imports made
inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "connectors", "accel", "serving")
LAYER = {"serving": 3, "engine": 2, "connectors": 1, "accel": 1}
# Contract modules: everyone may import them; they import only each other.
CONTRACTS = {"engine.errors", "engine.arrow_sql_types", "engine.process_exit", "connectors.base",
             "connectors.sql_render", "connectors.arrow_filters", "accel.base"}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path, module: str) -> set[str]:
    out: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.split(".")[0] in PACKAGES:
                stem = node.module
            else:
                continue
            out.add(stem)  # `from x import y`: y may be a module of x (the longest known name wins)
            out.update(f"{stem}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
    return out


def _graph() -> dict[str, set[str]]:
    raw = {_module(p): _imports(p, _module(p)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, imports in raw.items():
        targets = set()
        for name in imports:
            while name and name not in raw:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):  # a package's own __init__
                targets.add(name)
        graph[module] = targets
    return graph


def _wrong_imports() -> list[str]:
    wrong = []
    for module, imports in _graph().items():
        for target in imports:
            if module in CONTRACTS:
                ok = target in CONTRACTS
            else:
                same = target.split(".")[0] == module.split(".")[0]
                ok = target in CONTRACTS or same or LAYER[target.split(".")[0]] < LAYER[module.split(".")[0]]
            if not ok:
                wrong.append(f"{module} -> {target}")
    return sorted(wrong)


def test_imports_follow_the_layers() -> None:
    wrong = _wrong_imports()
    assert wrong == [], "imports against the layers (serving -> engine -> connectors/accel -> contracts):\n" + \
        "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_a_wrong_import() -> None:
    probe = ROOT / "connectors" / "_layers_probe.py"
    probe.write_text("def f():\n    from serving import server  # noqa\n    from ..engine import runtime  # noqa\n")
    try:
        wrong = _wrong_imports()
    finally:
        probe.unlink()
    assert {"connectors._layers_probe -> serving.server", "connectors._layers_probe -> engine.runtime"} <= set(wrong)


def test_engine_jobs_stay_in_their_packages() -> None:
    """Inside the engine: the query and refresh packages never call back into the Runtime facade,
    and refresh never plans queries itself (it is handed a source reader)."""
    wrong = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                   if (m.startswith(("engine.query", "engine.refresh")) and t == "engine.runtime")
                   or (m.startswith("engine.refresh") and t.startswith("engine.query")))
    assert wrong == []
