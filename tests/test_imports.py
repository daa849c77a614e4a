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

# The readable core at the top of minisd/ (issue 18): what a learner reads. It reaches the
# speed appendix only through the switch and imports no data or tool code.
CORE = {"functional", "layers", "blocks", "model", "step", "optim", "backend", "tracing", "gradcheck"}
LOOP = {"train"}                 # the training loop: the one top module that uses data and tools
ENTRY_POINTS = {"sweep", "plot"}  # `python -m minisd.sweep|plot`: a few lines each, the code is in tools/
FOLDERS = {"fast", "data", "tools"}


def module_names(package_dir=PACKAGE_DIR):
    """Dotted names, relative to the package, of every module: "layers", "fast.cpu", "data" (its
    __init__), ...; the package's own __init__ is INIT."""
    names = set()
    for p in package_dir.rglob("*.py"):
        parts = list(p.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.add(".".join(parts) or INIT)
    return names


def imported_modules(source, modules, package=PACKAGE, here=""):
    """The modules among ``modules`` (dotted names such as "train", "fast.cpu", "__init__") that
    ``source``, the module ``here``, imports.

    Every import statement counts, at any depth (module level, inside functions, classes,
    try/if blocks). Handles ``import minisd.x.y``, ``from minisd.x import y``, ``from minisd
    import x`` and relative imports of any level (``from . import x``, ``from ..x import y``).
    ``from P import name`` imports the module P.name when there is one, else P itself.
    """
    found = set()
    package_of_here = here.split(".")[:-1] if here and here != INIT else []
    if here in modules and (PACKAGE_DIR / here.replace(".", "/") / "__init__.py").exists():
        package_of_here = here.split(".")  # a package's __init__: relative to itself

    def add(base, names):
        """``from <package>.<base> import names``; ``base`` "" for the package itself."""
        for name in names:
            full = f"{base}.{name}" if base else name
            if full in modules:
                found.add(full)
            else:
                found.add(base if base in modules else INIT)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == package:
                    dotted = ".".join(parts[1:])
                    found.add(dotted if dotted in modules else INIT)
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                anchor = package_of_here[:len(package_of_here) - (node.level - 1)]
                base = ".".join(anchor + (node.module.split(".") if node.module else []))
                add(base, names)
            elif node.module and node.module.split(".")[0] == package:
                add(node.module[len(package) + 1:], names)
    return found


def import_graph(package_dir=PACKAGE_DIR):
    """{module: set of minisd modules it imports} for every module in ``package_dir``, folders included."""
    modules = module_names(package_dir)
    graph = {}
    for p in sorted(package_dir.rglob("*.py")):
        parts = list(p.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts) or INIT
        graph[name] = imported_modules(p.read_text(), modules, here=name) - {name}
    return graph


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
    assert {"train", "tools.plot", "tools.runs", "step", "data", "data.files", "fast.cpu"} <= set(graph)  # read
    assert "tools.runs" in graph["tools.plot"] and "tools.plot" in graph["train"]                           # edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in minisd: " + " -> ".join(cycle)


def test_plot_does_not_import_train():
    """The cycle this test was written for: plot read metrics.csv through train (issue 11)."""
    assert "train" not in import_graph()["tools.plot"]


def test_the_tree_shows_the_design():
    """The top of minisd/ holds the readable core and the loop (plus two entry points);
    everything else sits one level down, in a folder that names its role."""
    top = {p.stem for p in PACKAGE_DIR.glob("*.py")} - {INIT}
    assert top == CORE | LOOP | ENTRY_POINTS
    assert len(top) <= 12, f"{len(top)} modules at the top of minisd/ (issue 18: at most 12)"
    assert {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == FOLDERS
    for name in ENTRY_POINTS:
        assert len((PACKAGE_DIR / f"{name}.py").read_text().splitlines()) <= 8, f"{name}.py is more than an entry point"


def test_the_core_reaches_speed_code_only_through_the_switch():
    """No core module imports data or tool code, nor a CPU/GPU twin except through fast.switch."""
    graph = import_graph()
    for name in CORE:
        for target in graph[name]:
            head = target.split(".")[0]
            assert head not in ("data", "tools"), f"core module {name} imports {target}"
            if head == "fast":
                assert target in ("fast", "fast.switch"), f"core module {name} imports {target}, not the switch"


def test_the_claim_is_a_leaf_and_nothing_imports_up_the_tree():
    """The folder claim (issue 29) is shared by the run, the sweep and the download: it imports nothing
    of minisd, so each may import it without a cycle; data reaches into tools for it and nothing else,
    and no tool imports the training loop above it."""
    graph = import_graph()
    assert graph["tools.claim"] == set()
    assert "tools.claim" in graph["data.files"] and "tools.claim" in graph["tools.runs"]
    assert "tools.claim" in graph["tools.sweep"]
    for name, targets in graph.items():
        if name.startswith("data"):
            assert {t for t in targets if t.split(".")[0] == "tools"} <= {"tools.claim"}, name
        if name.startswith("tools"):
            assert "train" not in targets, f"{name} imports the training loop"


def test_every_kind_of_import_is_seen():
    source = '''
import os
import minisd
import minisd.train as t
from minisd.data import load_cifar10
from minisd import backend, ResNet
from . import layers
from .model import ResNet
from ..fast import switch
from ..data.files import DataError

def later():
    from ..tools.plot import plot_runs          # function level
    try:
        from .. import tracing
    except ImportError:
        pass

class C:
    import minisd.optim
'''
    modules = {"__init__", "train", "data", "data.files", "backend", "layers", "model", "tools", "tools.plot",
               "tools.runs", "tracing", "optim", "fast", "fast.switch", "fast.cpu"}
    assert imported_modules(source, modules, here="fast.cpu") == {
        "__init__", "train", "data", "data.files", "backend", "fast.switch", "tools.plot", "tracing", "optim",
        "fast"}  # `from . import layers` / `from .model import` inside fast/: fast.layers is no module, so fast


@pytest.mark.parametrize("graph,cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),  # a diamond is not a cycle
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_modules_stay_readable_in_size():
    """No module over 600 lines; the training loop, read top to bottom, at most 400."""
    for p in PACKAGE_DIR.rglob("*.py"):
        n = len(p.read_text().splitlines())
        assert n <= 600, f"{p.relative_to(PACKAGE_DIR)}: {n} lines"
    assert len((PACKAGE_DIR / "train.py").read_text().splitlines()) <= 400
