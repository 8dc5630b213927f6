"""The package's shape: no import cycles, nothing imported against the flow, thin shells."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "quantivista"

# a package may not import these (the flow runs one way: model -> storage -> ... -> shells)
FORBIDDEN = {
    "model": {"storage", "providers", "acquisition", "quality", "processing", "actions",
              "reference", "pipeline", "services", "runtime", "platform", "cli", "bus",
              "benchmarks", "reporting"},
    "bus": {"storage", "providers", "acquisition", "pipeline", "services", "runtime", "cli"},
    "storage": {"providers", "acquisition", "quality", "processing", "reference", "actions",
                "pipeline", "services", "runtime", "platform", "cli", "benchmarks", "bus",
                "reporting"},
    "providers": {"storage", "acquisition", "pipeline", "services", "runtime", "platform",
                  "cli"},
    "acquisition": {"storage", "pipeline", "services", "runtime", "platform", "cli"},
    "quality": {"storage", "providers", "acquisition", "pipeline", "services", "runtime",
                "platform", "cli"},
    "pipeline": {"services", "runtime", "platform", "cli"},
    "reporting": {"storage", "providers", "acquisition", "pipeline", "services", "runtime",
                  "platform", "cli", "api"},
    "services": {"runtime", "platform", "cli"},
}  # fmt: skip
# the shells talk to the services only (plus the types they carry)
SHELL_ALLOWED = {"cli", "services", "runtime", "model", "errors", "config"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Return the quantivista modules `path` imports (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(sub) for sub in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("quantivista")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("quantivista"):
            assert node.module is not None
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in SRC.rglob("*.py")}
    return {m: {t for t in _imports(f) if t in files and t != m} for m, f in files.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_imports_against_the_flow() -> None:
    upward = [
        f"{m} -> {t}"
        for m, targets in _graph().items()
        for t in targets
        if _top(t) in FORBIDDEN.get(_top(m), set())
    ]
    assert upward == []


def test_the_cli_calls_services_not_stores_or_providers() -> None:
    leaks = [
        f"{m} -> {t}"
        for m, targets in _graph().items()
        if _top(m) == "cli"
        for t in targets
        if _top(t) not in SHELL_ALLOWED
    ]
    assert leaks == []


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    packages = {m for m in graph if (SRC.parent / Path(*m.split("."))).is_dir()}
    # a package's __init__ re-exports its modules: those edges are not dependencies
    edges = {m: ts - packages for m, ts in graph.items() if m not in packages}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
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

    for v in edges:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("module", ["platform", "runtime"])
def test_the_composition_root_and_the_facade_stay_small(module: str) -> None:
    lines = len((SRC / f"{module}.py").read_text().splitlines())
    # the runtime wires one more part per service (streaming, workers, backfill, reporting):
    # a line budget that grows with them, no logic of its own
    assert lines <= {"platform": 270, "runtime": 320}[module]
