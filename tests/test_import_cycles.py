"""No import cycle anywhere in ``src/kldiv``.

Every module is parsed with :mod:`ast` (nothing is imported); each ``import`` / ``from ... import``
that names a kldiv module is an edge of the package's import graph, whether it runs when the module
is loaded or when a function is called (a function-level import only hides a cycle until that call).
Imports under ``if TYPE_CHECKING:`` never run and are left out. An edge goes to the most specific
module named: ``from kldiv.cli import parser`` is an edge to ``kldiv.cli.parser``, ``from kldiv import
__version__`` an edge to ``kldiv`` (its ``__init__``). A cycle is reported as ``a -> b -> ... -> a``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "kldiv"


def module_names(src: Path = SRC) -> dict[str, Path]:
    """``dotted name → file`` of every module of the package (a package is its ``__init__``)."""
    found = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, except those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` starts from."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts.pop()
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The most specific module a dotted name names (``kldiv.cli.parser.Parser``: ``kldiv.cli.parser``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``module → the kldiv modules it imports`` (self-edges left out)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                targets = [_target(alias.name, modules) for alias in node.names]
            else:
                base = _base(name, is_package, node)
                targets = [_target(f"{base}.{alias.name}", modules) for alias in node.names]
            graph[name].update(t for t in targets if t is not None and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_through(component, graph) for component in components]


def _path_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the component's first module back to itself."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(graph[node] & members):
                if other == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if other not in previous:
                    previous[other] = node
                    following.append(other)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("def f():\n    from .sub import b\n    return b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("import kldiv.a\nfrom .. import c\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from kldiv import a\n"
        "from kldiv.sub.b import x\n"
    )
    graph = import_graph(module_names(tmp_path))
    assert graph == {
        "kldiv": {"kldiv.a"},
        "kldiv.a": {"kldiv.sub.b"},
        "kldiv.sub": set(),
        "kldiv.sub.b": {"kldiv.a", "kldiv.c"},
        "kldiv.c": {"kldiv.sub.b"},
    }
    # a -> sub.b -> a and c -> sub.b -> c: one strongly connected component, one cycle reported
    assert cycles(graph) == [["kldiv.a", "kldiv.sub.b", "kldiv.a"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycles() -> None:
    found = cycles(import_graph(module_names()))
    assert not found, "import cycles in src/kldiv:\n" + "\n".join(" -> ".join(c) for c in found)
