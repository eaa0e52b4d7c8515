"""The package's layout, read from the real tree with ``ast``: no module of ``eventtracking/`` over
600 lines, no class over 300, and no import cycle among its modules.

Every import statement counts, wherever it is: at the top, inside a function (a lazy import),
under ``if TYPE_CHECKING:``. ``import eventtracking.x.y`` is an edge to ``eventtracking.x.y``;
``from eventtracking.x import y`` an edge to ``eventtracking.x``, and to ``eventtracking.x.y``
when that is a module (only the latter when ``eventtracking.x`` encloses the importing module and
every name taken is a submodule); relative imports are resolved the same way. A submodule's implicit
dependency on its parent package's ``__init__`` (Python runs it first) is not an edge: it is a
cycle only if the ``__init__`` itself imports the submodule and the submodule imports the
package back.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

PACKAGE = Path(__file__).resolve().parent.parent / "eventtracking"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300

Graph = Dict[str, Set[str]]


def modules(root: Path) -> Dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, name: str, is_package: bool) -> Iterator[Tuple[str, List[str]]]:
    """``(module, names)`` of one import statement in module ``name``: the module it names
    (relative imports resolved) and, for ``from ... import``, the names taken from it."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, []
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        yield target, [alias.name for alias in node.names]


def import_graph(root: Path) -> Graph:
    """Module -> the package's modules it imports, from every import statement in it."""
    known = modules(root)
    graph: Graph = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target, names in _imported(node, name, path.name == "__init__.py"):
                submodules = {f"{target}.{taken}" for taken in names} & known.keys()
                edges = set(submodules)
                # ``from <an enclosing package> import <its submodules>`` adds nothing to the
                # implicit dependency on that package: only the submodules count.
                if not (names and len(submodules) == len(names) and name.startswith(f"{target}.")):
                    edges.add(target)
                graph[name] |= {edge for edge in edges if edge in known and edge != name}
    return graph


def cycles(graph: Graph) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def a_cycle(graph: Graph, component: List[str]) -> List[str]:
    """One concrete cycle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    paths: Dict[str, Optional[str]] = {start: None}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to start
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    path: List[str] = []
                    step: Optional[str] = node
                    while step is not None:
                        path.append(step)
                        step = paths[step]
                    return [*reversed(path), start]
                if successor not in paths:
                    paths[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def long_classes(path: Path) -> Iterator[Tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > MAX_CLASS_LINES:
                yield node.name, length


def test_no_module_is_over_600_lines():
    too_long = {}
    for name, path in modules(PACKAGE).items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long[name] = lines
    assert too_long == {}, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_no_class_is_over_300_lines():
    too_long = {
        f"{name}.{cls}": length
        for name, path in modules(PACKAGE).items()
        for cls, length in long_classes(path)
    }
    assert too_long == {}, f"classes over {MAX_CLASS_LINES} lines: {too_long}"


def test_no_import_cycle_lazy_imports_included():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and graph["eventtracking.collector.server"] >= {"eventtracking.collector.handler"}
    found = [
        f"{' -> '.join(a_cycle(graph, component))} (all of {', '.join(component)})"
        for component in cycles(graph)
    ]
    assert found == [], "import cycles:\n" + "\n".join(found)


# -- the checker itself, on a package made for it: it finds what it must and nothing else --------


def _package(root: Path, files: Dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_checker_counts_lazy_relative_and_from_imports(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def later():\n    from pkg.sub import b\n",  # lazy: an edge to pkg.sub and pkg.sub.b
            "sub/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n",
            "sub/b.py": "import pkg.a\n",
            "sub/c.py": "from ..a import later\nfrom pkg.sub.b import x\n",  # no module pkg.sub.b.x
            "d.py": "import pkg.sub.c\nimport os\n",  # a submodule: not its parent package
        },
    )
    graph = import_graph(package)
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub", "pkg.sub.b"},
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.b": {"pkg.a"},
        "pkg.sub.c": {"pkg.a", "pkg.sub.b"},
        "pkg.d": {"pkg.sub.c"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.sub.c"]]
    assert a_cycle(graph, ["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.sub.c"]) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_a_parent_package_is_no_edge_unless_it_imports_the_module(tmp_path):
    files = {"__init__.py": "", "x.py": "from pkg.y import z\n", "y.py": "z = 1\n"}
    assert cycles(import_graph(_package(tmp_path, files))) == []
    files["y.py"] = "from pkg import x\nz = 1\n"  # the package's module x: an edge back
    assert cycles(import_graph(_package(tmp_path, files))) == [["pkg.x", "pkg.y"]]


def test_taking_sibling_modules_from_the_enclosing_package_is_no_edge_to_it(tmp_path):
    files = {
        "__init__.py": "def __getattr__(name):\n    from pkg import client\n    return client\n",
        "client.py": "from pkg import messages\n",  # the parent's submodule: the implicit dependency
        "messages.py": "",
    }
    assert cycles(import_graph(_package(tmp_path, files))) == []
    files["client.py"] = "from pkg import messages, __getattr__\n"  # a name of the package itself
    assert cycles(import_graph(_package(tmp_path, files))) == [["pkg", "pkg.client"]]


def test_the_checker_measures_classes_with_their_decorators(tmp_path):
    body = "\n".join(f"    a{i} = {i}" for i in range(MAX_CLASS_LINES - 1))
    path = tmp_path / "m.py"
    path.write_text(f"class Fits:\n{body}\n\n@decorated\nclass Over:\n{body}\n", encoding="utf-8")
    assert list(long_classes(path)) == [("Over", MAX_CLASS_LINES + 1)]
