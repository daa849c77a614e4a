"""No module of minisd imports another in a circle, function-level imports included.

The import graph is read from the source with ``ast`` (nothing is imported), so
an import hidden inside a function - the usual way to paper over a cycle - counts
like one at the top of the file. Whatever modules minisd/ holds are checked.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = "minisd"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
INIT = "__init__"  # the package itself: `from minisd import trace` imports minisd/__init__.py


def imported_modules(source, modules, package=PACKAGE):
    """The modules among ``modules`` (names such as "train", "__init__") that ``source`` imports.

    Every import statement counts, at any depth (module level, inside functions,
    classes, try/if blocks). Handles ``import minisd.x``, ``from minisd.x import y``,
    ``from minisd import x`` and the relative ``from . import x`` / ``from .x import y``.
    ``from minisd import name`` of a name that is not a module imports the package's
    ``__init__``.
    """
    found = set()

    def add_from(base, names):
        """``from <package>.<base> import names``; ``base`` "" for the package itself."""
        if base:
            head = base.split(".")[0]
            if head in modules:
                found.add(head)
            return
        for name in names:
            found.add(name if name in modules else INIT)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == package:
                    found.add(parts[1] if len(parts) > 1 and parts[1] in modules else INIT)
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level == 1:                            # from . import x / from .x import y
                add_from(node.module or "", names)
            elif node.level == 0 and node.module and node.module.split(".")[0] == package:
                add_from(node.module[len(package) + 1:], names)
    return found


def import_graph(package_dir=PACKAGE_DIR):
    """{module: set of minisd modules it imports} for every ``*.py`` in ``package_dir``."""
    modules = {p.stem for p in package_dir.glob("*.py")}
    return {p.stem: imported_modules(p.read_text(), modules) - {p.stem}
            for p in sorted(package_dir.glob("*.py"))}


def find_cycle(graph):
    """One import cycle as a list [a, b, ..., a], or None. Depth-first search, modules in sorted order."""
    state = {}  # module -> "open" while on the current path, "done" once fully explored
    path = []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return path[path.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        path.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_minisd_has_no_import_cycle():
    graph = import_graph()
    assert {"train", "plot", "runs", "step", "data"} <= set(graph)   # the graph was really read
    assert "runs" in graph["plot"] and "plot" in graph["train"]     # ... with its edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in minisd: " + " -> ".join(cycle)


def test_plot_does_not_import_train():
    """The cycle this test was written for: plot read metrics.csv through train (issue 11)."""
    assert "train" not in import_graph()["plot"]


def test_every_kind_of_import_is_seen():
    source = '''
import os
import minisd
import minisd.train as t
from minisd.data import load_cifar10
from minisd import backend, ResNet
from . import layers
from .model import ResNet

def later():
    from .plot import plot_runs          # function level
    try:
        from . import tracing
    except ImportError:
        pass

class C:
    import minisd.optim
'''
    modules = {"__init__", "train", "data", "backend", "layers", "model", "plot", "tracing", "optim", "runs"}
    assert imported_modules(source, modules) == {
        "__init__", "train", "data", "backend", "layers", "model", "plot", "tracing", "optim"}


@pytest.mark.parametrize("graph,cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),  # a diamond is not a cycle
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle
