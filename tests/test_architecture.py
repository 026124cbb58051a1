"""The layers of the package: lower layers never import the front ends, and no module imports itself in a circle.

Every import counts, also the ones inside functions: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sidestep"
FRONT_ENDS = ("sidestep.cli", "sidestep.wizard")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` depends on the module pkg.mod when there is one, else on pkg
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t.startswith("sidestep") and t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_lower_layers_never_import_the_front_ends():
    graph = _graph()
    upward = {f"{m} -> {t}" for m, targets in graph.items() if not m.startswith(FRONT_ENDS)
              for t in targets if t.startswith(FRONT_ENDS)}
    assert not upward, sorted(upward)


def test_only_the_entry_point_imports_the_wizard():
    """The wizard is UI on top: the CLI's commands and everything below never import it; only the entry point
    (`sidestep.cli.main`, which starts it when run without a command) does."""
    graph = _graph()
    offenders = sorted(m for m, targets in graph.items() if not m.startswith("sidestep.wizard")
                       and m != "sidestep.cli.main" and any(t.startswith("sidestep.wizard") for t in targets))
    assert offenders == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_graph_sees_lazy_imports():
    """The checks above would pass vacuously if function-level imports were missed."""
    graph = _graph()
    assert "sidestep.wizard" in graph["sidestep.cli.main"]  # imported inside _run_wizard
    assert "sidestep.data.preprocess" in graph["sidestep.cli.train_cmd"]  # imported inside maybe_preprocess
