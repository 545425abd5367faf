"""The package's shape: its layers run one way (no module imports one that imports it back, not
even inside a function or for type checking), its modules stay readable in one sitting, and the
tests and benchmarks use only public names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "subpixel_cli"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports anywhere in its text."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_module_imports_one_above_it() -> None:
    """An order of the modules exists in which each imports only those before it: no cycles."""
    graph, placed, order = _imports(), set(), []
    while len(placed) < len(graph):
        ready = sorted(m for m in graph if m not in placed and graph[m] <= placed)
        assert ready, f"import cycle among {sorted(m for m in graph if m not in placed and not graph[m] <= placed)}"
        placed.update(ready)
        order += ready
    layer = {m: k for k, m in enumerate(order)}
    # the file formats live low: the loader reads them, the commands that write them sit above
    assert layer["subpixel_cli.calibration"] < layer["subpixel_cli.hub"] < layer["subpixel_cli.quantize"]
    assert "subpixel_cli.quantize" not in graph["subpixel_cli.hub"]


def test_every_module_reads_in_one_sitting() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*") if p.suffix in (".py", ".c", ".h")
            and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_tests_and_benchmarks_use_only_public_names() -> None:
    """No ``_private`` name is imported, read off another object or patched by name."""
    found = []
    for folder in ("tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name)
                                                              and node.value.id in ("self", "cls")):
                    names = [node.attr]
                elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "setattr" and len(node.args) > 1:
                    names = [node.args[1].value] if isinstance(node.args[1], ast.Constant) else []
                private = [n for n in names if isinstance(n, str) and n.startswith("_") and not n.startswith("__")]
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in private]
    assert not found, found
