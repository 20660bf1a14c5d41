"""The shape of the code a reader walks: no class hides two (over ~300 lines), no function hides two
(over ~120), and no two modules import each other, since a cycle means neither room is the lower one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hms_resources", "hms_assets", "hms_jobs")
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 120


def runtime_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "migrations" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every module `path` imports, at any depth of the tree (type-checking and lazy imports too),
    relative imports resolved, names imported from a package counted as its submodules."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_class_or_function_is_longer_than_one_idea():
    long = []
    for path in runtime_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
                long.append(f"{path.relative_to(ROOT)}: class {node.name} has {lines} lines")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(ROOT)}: {node.name}() has {lines} lines")
    assert long == []


def test_no_two_modules_import_each_other():
    files = runtime_files()
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, module_name(p)) & modules for p in files}
    pairs = sorted(
        f"{a} <-> {b}" for a, deps in graph.items() for b in deps if a < b and a in graph.get(b, set()) and a != b
        and not b.startswith(a + ".") and not a.startswith(b + ".")
    )
    assert pairs == []
