"""The import graph of wave_deploy, read statically (ast): which modules each module imports at import time,
and which function-local imports defer nothing (tests/test_architecture.py keeps them out).

A function-local import is worth its place when it defers loading something: a third-party package other than
the light core every command loads anyway (LIGHT), or a wave_deploy module that loads one, which the enclosing
module does not already load at import time; or when it breaks an import cycle (the imported module loads the
enclosing one). Everything else (the standard library, light modules, modules already loaded) belongs at the
top of the module.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wave_deploy"
# Loaded by every command (the CLI group, option models, errors): deferring them saves nothing.
LIGHT = {"click", "pydantic", "pydantic_core", "annotated_types", "typing_extensions"}
ALIASES = {"wave_deploy._kit": ROOT / "export", "wave_deploy._profiles": ROOT / "profiles"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "export":
        parts[0:1] = ["wave_deploy", "_kit"]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package (and the kit, as wave_deploy._kit), by dotted name."""
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found.update({module_name(p): p for p in (ROOT / "export").glob("*.py")})
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The wave_deploy module an import names (``from a.b import c`` may name module a.b.c or a.b)."""
    return name if name in known else None


def _targets(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """Dotted names an import statement loads (for ``from X import y``: X.y when it is a module, else X)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in known else base)
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """What a module imports when it is imported: module-level statements, not functions, not TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()

    def visit(body) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0:
                out.update(_targets(node, known))
            elif isinstance(node, ast.If) and not _type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    return out


@cache
def _graph() -> dict[str, frozenset[str]]:
    known = modules()
    return {name: frozenset(top_level_imports(path, known)) for name, path in known.items()}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def closure(name: str) -> frozenset[str]:
    """Every module (wave_deploy and third-party roots) loaded by importing ``name``, packages included."""
    graph = _graph()
    seen: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in graph:
            stack.extend(graph[current])
            stack.extend(p for p in _parents(current) if p in graph)
    return frozenset(seen)


def heavy(names: frozenset[str]) -> set[str]:
    """Third-party roots among ``names`` that are not stdlib and not LIGHT."""
    roots = {n.split(".")[0] for n in names}
    return {r for r in roots if r != "wave_deploy" and r not in sys.stdlib_module_names and r not in LIGHT}


def _optional_imports(tree: ast.AST) -> set[ast.AST]:
    """Imports in the body of a ``try`` that catches ImportError (or ModuleNotFoundError): optional modules."""
    out: set[ast.AST] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if caught & {"ImportError", "ModuleNotFoundError", "(ImportError, ModuleNotFoundError)"}:
            out.update(
                n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))
            )
    return out


def pointless_local_imports() -> list[str]:
    """``path:line: import X`` of every function-local import that defers nothing."""
    known = modules()
    out = []
    for name, path in sorted(known.items()):
        loaded = closure(name)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        optional = _optional_imports(tree)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or getattr(node, "level", 0):
                    continue
                if node in optional:  # try: import X / except ImportError: a module some platforms lack
                    continue
                for target in dict.fromkeys(_targets(node, known)):
                    new = closure(target) - loaded
                    cycle = name in closure(target)
                    if not heavy(new) and not cycle:
                        out.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {target}")
    return out


if __name__ == "__main__":
    found = pointless_local_imports()
    print("\n".join(found))
    print(len(found), "function-local imports defer nothing")
