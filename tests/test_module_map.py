"""The module map's rules, enforced from the imports themselves (read from the source, not run).

- The lower layers (``run``, ``stages``, ``models``, ``io``, ``dedup``) import nothing from the
  upper ones (``executors``, ``report``, ``cli``, ``pipeline``, ``passes``, ``refilter``,
  ``curate``): passes do not know where they run, and nothing below knows who calls it.
- ``report`` only reads and draws: it imports no executor, pass sequence or CLI.
- No import cycle between modules, counting imports inside functions too.
- One module per concern: none longer than 350 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pixsieve"
LOWER = ("run", "stages", "models", "io", "dedup")
UPPER = ("executors", "report", "cli", "pipeline", "passes", "refilter", "curate")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module → the pixsieve modules it imports (anywhere in its source)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                if not target.startswith("pixsieve"):
                    continue
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in files and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_lower_layers_import_no_upper_layer() -> None:
    bad = [
        f"{m} imports {d}"
        for m, deps in _graph().items()
        if _area(m) in LOWER
        for d in deps
        if _area(d) in UPPER or d == "pixsieve"
    ]
    assert not bad, bad


def test_report_only_reads_and_draws() -> None:
    bad = [
        f"{m} imports {d}"
        for m, deps in _graph().items()
        if _area(m) == "report"
        for d in deps
        if _area(d) in UPPER and _area(d) != "report"
    ]
    assert not bad, bad


def test_no_import_cycle() -> None:
    graph = _graph()
    for module in graph:  # a package imports its own modules to re-export them: not a cycle
        graph[module] = {d for d in graph[module] if not module.startswith(f"{d}.")}
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_rules_see_imports() -> None:
    graph = _graph()
    assert "pixsieve.executors" in graph["pixsieve.passes"]
    assert "pixsieve.run.layout" in graph["pixsieve.run.score"]
    assert "pixsieve.report.html" in graph["pixsieve.pipeline"]  # a lazy import counts too


MAX_LINES = 350


def test_no_module_is_longer_than_350_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long
