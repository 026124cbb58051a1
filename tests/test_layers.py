"""Layering: the wizard is UI on top; the CLI and the lower layers never import it (only the entry point
`sidestep.cli.main` starts it). The preset store and the settings live below both."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sidestep"
ENTRY_POINT = PACKAGE / "cli" / "main.py"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_only_the_entry_point_imports_the_wizard():
    offenders = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
                 if PACKAGE / "wizard" not in path.parents and path != ENTRY_POINT
                 and any(n == "sidestep.wizard" or n.startswith("sidestep.wizard.") for n in _imports(path))]
    assert offenders == []

