"""The package layout of DESIGN §2: one package per responsibility, imports only going down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# Top to bottom: a package may import those below it and itself, never one above it.
LAYERS = ["cli", "serving", "monitoring", "registry", "models", "db", "data", "features"]
BASE = {"config", "errors"}  # src/config.py and src/errors.py, below every package


def _layer(module: str) -> int:
    """The rank of `src.X...` (the modules of the base count below every package)."""
    top = module.split(".")[1]
    return len(LAYERS) if top in BASE else LAYERS.index(top)


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The `src` modules an import statement imports (`from src.cli import data`: src.cli.data)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("src.")]
    if node.module is None or not (node.module == "src" or node.module.startswith("src.")):
        return []
    names = [f"{node.module}.{alias.name}" for alias in node.names]
    modules = [name for name in names if (SRC.parent / f"{name.replace('.', '/')}.py").is_file()]
    return modules or [node.module]


def _imports(nodes: list[ast.stmt] | ast.Module) -> list[tuple[int, str]]:
    """Every `src` module imported by these statements (a module: at any depth, functions too)."""
    walked = ast.walk(nodes) if isinstance(nodes, ast.Module) else iter(nodes)
    return [
        (node.lineno, module)
        for node in walked
        if isinstance(node, ast.Import | ast.ImportFrom)
        for module in _imported(node)
    ]


def _name(path: Path) -> str:
    return ".".join(("src", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


def _modules() -> list[Path]:
    return sorted(path for path in SRC.rglob("*.py") if "migrations" not in path.parts)


def test_every_package_is_a_known_layer() -> None:
    packages = {path.name for path in SRC.iterdir() if (path / "__init__.py").is_file()}
    assert packages <= set(LAYERS), f"packages not in DESIGN §2's layers: {packages - set(LAYERS)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(SRC)))
def test_imports_only_go_down(path: Path) -> None:
    module = _name(path)
    imports = _imports(ast.parse(path.read_text(encoding="utf-8")))
    if module == "src" or module.split(".")[1] in BASE:
        assert not [name for _, name in imports if name.split(".")[1] not in BASE]
        return
    upward = [f"line {line}: {name}" for line, name in imports if _layer(name) < _layer(module)]
    assert not upward, f"{module} imports from a layer above it: {upward}"


def test_no_import_cycle_between_modules() -> None:
    """Module-level imports between src modules form no cycle (a function-level one may)."""
    graph = {
        _name(path): {
            name.removesuffix(".__init__")
            for _, name in _imports(ast.parse(path.read_text(encoding="utf-8")).body)
        }
        for path in _modules()
    }
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join([*stack, module])}"
        if module in done or module not in graph:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*stack, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
