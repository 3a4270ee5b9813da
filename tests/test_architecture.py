"""docs/architecture.md stays true to the code: every module on disk is in its module list and no module it
lists is gone; every module sits on one floor and imports only from its floor or below; nothing but the
package face imports ``__version__`` from it; there is no import cycle; and no function-local import defers
nothing (tests/_imports.py)."""

from __future__ import annotations

import ast
import re

import pytest
from _imports import ROOT, _targets, _type_checking, modules, pointless_local_imports

DOC = ROOT / "docs" / "architecture.md"
PATH = re.compile(r"`((?:wave_deploy|export)(?:/\w+)*(?:\.py|/))`")


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _on_disk() -> set[str]:
    """Every module file of the package and the kit, by path; empty ``__init__.py`` files mark packages only."""
    files = [*(ROOT / "wave_deploy").rglob("*.py"), *(ROOT / "export").glob("*.py")]
    return {str(p.relative_to(ROOT)) for p in files if p.name != "__init__.py" or p.read_text().strip()}


def test_the_module_list_names_every_module_on_disk_and_no_other():
    listed = {m for m in PATH.findall(_section("Modules")) if m.endswith(".py")}
    on_disk = _on_disk()
    assert sorted(on_disk - listed) == [], "modules on disk missing from docs/architecture.md's module list"
    assert sorted(listed - on_disk) == [], "docs/architecture.md lists modules that are gone"


def _floors() -> list[tuple[int, list[str]]]:
    """The floors table: (floor, the paths and folders on it)."""
    rows = []
    for line in _section("Floors").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.append((int(cells[0]), PATH.findall(cells[2])))
    assert rows, "docs/architecture.md has no floors table"
    return rows


def _floor_of(path: str, rows) -> int | None:
    """The floor of a module path: its own entry, else the most specific folder entry holding it."""
    best: tuple[int, int] | None = None  # (specificity, floor)
    for floor, entries in rows:
        for entry in entries:
            hit = path == entry or (entry.endswith("/") and path.startswith(entry))
            if hit and (best is None or len(entry) > best[0]):
                best = (len(entry), floor)
    return None if best is None else best[1]


def _module_imports() -> dict[str, set[str]]:
    """path -> paths of the wave_deploy modules it imports anywhere (functions too), TYPE_CHECKING aside."""
    known = modules()
    path_of = {name: str(p.relative_to(ROOT)) for name, p in known.items()}
    out: dict[str, set[str]] = {}
    for name, path in known.items():
        found: set[str] = set()
        stack = [(ast.parse(path.read_text(encoding="utf-8")), False)]
        while stack:
            node, in_type_checking = stack.pop()
            for child in ast.iter_child_nodes(node):
                is_import = isinstance(child, (ast.Import, ast.ImportFrom)) and not getattr(child, "level", 0)
                if is_import and not in_type_checking:
                    found.update(path_of[t] for t in _targets(child, known) if t in path_of and t != name)
                stack.append(
                    (child, in_type_checking or (isinstance(child, ast.If) and _type_checking(child)))
                )
        out[path_of[name]] = found
    return out


def test_every_module_sits_on_a_floor_and_imports_only_from_its_floor_or_below():
    rows, graph, on_disk = _floors(), _module_imports(), _on_disk()
    floor = {p: _floor_of(p, rows) for p in on_disk}
    assert sorted(p for p, f in floor.items() if f is None) == [], (
        "modules on no floor of docs/architecture.md"
    )
    up = sorted(
        f"{a} (floor {floor[a]}) imports {b} (floor {floor[b]})"
        for a, targets in graph.items()
        for b in targets
        if a in on_disk and b in on_disk and floor[b] > floor[a]  # type: ignore[operator]
    )
    assert up == [], "imports that point up a floor"


def test_there_is_no_import_cycle():
    graph = _module_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := walk(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = walk(start, [start])
            assert cycle is None, " -> ".join(cycle)


def test_no_module_but_the_package_face_imports_the_version_from_it():
    offenders = []
    for path in (ROOT / "wave_deploy").rglob("*.py"):
        if path == ROOT / "wave_deploy" / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            face = isinstance(node, ast.ImportFrom) and node.module == "wave_deploy" and not node.level
            if face and any(a.name == "__version__" for a in node.names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_no_function_local_import_defers_nothing():
    """A function-local import must defer loading something (a heavy package the module does not load) or
    break an import cycle; otherwise it belongs at the top of the module."""
    assert pointless_local_imports() == []


@pytest.mark.parametrize("folder", ["cli", "reports"])
def test_no_function_in_the_cli_or_the_reports_is_longer_than_80_lines(folder):
    long = []
    for path in (ROOT / "wave_deploy" / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []
