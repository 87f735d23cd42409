"""The package's import graph: no cycle, and no import that runs up or sideways between floors.

The graph is read with ``ast`` from every ``medzoo/**/*.py``, module-top and function-level imports alike (an import
inside a function still ties the two modules together; hiding it there only hides it from readers). The floors are
those drawn in ARCHITECTURE.md: a package may import its own modules and any package on a lower floor, never one on
its own floor or above.

Library code imports at the module top; an import stays inside a function only with a reason listed in
``LAZY_IMPORTS`` (an optional dependency, a measured import cost on a path that must stay light), and CLI modules say
in their docstrings why theirs are lazy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medzoo"

#: Top-level unit (``medzoo.<unit>``) -> floor; ARCHITECTURE.md draws the same table.
FLOORS = {
    "registry": 1, "config": 1, "version": 1, "utils": 1, "metrics": 1,
    "encoders": 2, "heads": 2, "aggregation": 2, "data": 2,
    "models": 3,
    "zoo": 4,
    "train": 5, "infer": 5,
    "evaluation": 6,
    "experiment": 7,
    "cli": 8,
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from (relative levels resolved against ``module``)."""
    base = node.module or ""
    if not node.level:
        return base
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    return ".".join(anchor[: len(anchor) - (node.level - 1)] + ([base] if base else []))


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The medzoo modules one import statement loads (a submodule named in ``from X import sub`` counts)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "medzoo"]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = _from_base(node, module, is_package)
    if base.split(".")[0] != "medzoo":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: {imported medzoo modules}}`` over the whole package."""
    modules = _modules(package)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py", known):
                while target not in known and "." in target:  # ``import medzoo.x.y`` names an attribute, not a file
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import whose target's floor is not below the importer's (same unit excepted)."""
    bad = []
    for src, targets in sorted(graph.items()):
        su = _unit(src)
        if su is None:  # medzoo/__init__.py: the package's face, names resolved lazily
            continue
        for dst in sorted(targets):
            du = _unit(dst)
            if du is None:
                bad.append(f"{src} -> {dst}: a subpackage imports the top-level medzoo package")
            elif du not in FLOORS or su not in FLOORS:
                bad.append(f"{src} -> {dst}: {su if su not in FLOORS else du} has no floor")
            elif du != su and FLOORS[du] >= FLOORS[su]:
                bad.append(f"{src} -> {dst}: floor {FLOORS[su]} ({su}) imports floor {FLOORS[du]} ({du})")
    return bad


def test_every_unit_of_the_package_has_a_floor():
    units = {_unit(m) for m in _modules()} - {None}
    assert units - set(FLOORS) == set()


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_import_graph_has_no_cycle(graph):
    assert find_cycles(graph) == []


def test_no_import_runs_up_or_sideways(graph):
    assert layer_violations(graph) == []


@pytest.mark.parametrize("edges, expected", [
    ({"medzoo.a": {"medzoo.b"}, "medzoo.b": {"medzoo.a"}}, [["medzoo.a", "medzoo.b"]]),
    ({"medzoo.a": {"medzoo.b"}, "medzoo.b": {"medzoo.c"}, "medzoo.c": set()}, []),
    ({"medzoo.a": {"medzoo.b"}, "medzoo.b": {"medzoo.c"}, "medzoo.c": {"medzoo.a"}},
     [["medzoo.a", "medzoo.b", "medzoo.c"]]),
])
def test_cycle_finder_on_known_graphs(edges, expected):
    assert find_cycles(edges) == expected


def test_layer_check_flags_upward_and_sideways_imports():
    edges = {"medzoo.zoo.x": {"medzoo.train.y", "medzoo.models.z"}, "medzoo.train.y": {"medzoo.infer.w"},
             "medzoo.infer.w": set(), "medzoo.models.z": set()}
    assert layer_violations(edges) == [
        "medzoo.train.y -> medzoo.infer.w: floor 5 (train) imports floor 5 (infer)",
        "medzoo.zoo.x -> medzoo.train.y: floor 4 (zoo) imports floor 5 (train)",
    ]


def test_function_level_imports_are_part_of_the_graph(tmp_path):
    pkg = tmp_path / "medzoo"
    (pkg / "zoo").mkdir(parents=True)
    (pkg / "train").mkdir()
    for f in (pkg / "__init__.py", pkg / "zoo" / "__init__.py", pkg / "train" / "__init__.py",
              pkg / "train" / "checkpoint.py"):
        f.write_text("")
    (pkg / "zoo" / "load.py").write_text("def f():\n    from medzoo.train import checkpoint\n")
    assert import_graph(pkg)["medzoo.zoo.load"] == {"medzoo.train.checkpoint"}


# Function-level imports in the library (every unit but ``cli``), each with the reason it is not at the module top;
# the same reason is written next to the import or in its module's docstring. (module, top-level name) -> reason.
LAZY_IMPORTS = {
    ("medzoo.data._dicom", "pydicom"): "optional dependency (medzoo[dicom])",
    ("medzoo.data._dicom_write", "pydicom"): "optional dependency (medzoo[dicom])",
    ("medzoo.data.imageio", "torch"): "reading a file must not start torch (2 s, ~300 MB resident)",
    ("medzoo.experiment.demo", "resource"): "a Unix-only module",
    ("medzoo.experiment.plots", "matplotlib"): "the backend is chosen when a plot is drawn, never at import",
    ("medzoo.zoo.formats", "onnx"): "optional dependency (medzoo[onnx])",
    ("medzoo.zoo.formats", "onnxruntime"): "optional dependency (medzoo[onnx])",
}

def _imported_name(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """What one import statement names: a third-party top-level package, or the full medzoo module."""
    if isinstance(node, ast.Import):
        return [a.name if a.name.startswith("medzoo.") else a.name.split(".")[0] for a in node.names]
    base = _from_base(node, module, is_package)
    return [base if base.startswith("medzoo") else base.split(".")[0]]


def function_level_imports(path: Path, module: str, is_package: bool) -> set[tuple[str, str]]:
    """``{(module, imported name)}`` for every import inside a function (or a method) of one file."""
    found: set[tuple[str, str]] = set()
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found |= {(module, name) for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))
                      for name in _imported_name(node, module, is_package)}
    return found


def _library_lazy_imports(package: Path = PACKAGE) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for name, path in _modules(package).items():
        if _unit(name) != "cli":
            out |= function_level_imports(path, name, path.name == "__init__.py")
    return out


@pytest.fixture(scope="module")
def lazy_imports() -> set[tuple[str, str]]:
    return _library_lazy_imports()


def test_library_imports_sit_at_the_module_top_unless_a_reason_is_listed(lazy_imports):
    assert lazy_imports - set(LAZY_IMPORTS) == set()


def test_the_list_of_function_level_imports_names_only_imports_that_exist(lazy_imports):
    assert set(LAZY_IMPORTS) - lazy_imports == set()


def test_every_cli_module_with_function_level_imports_says_why():
    undocumented = []
    for name, path in _modules().items():
        if _unit(name) != "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if function_level_imports(path, name, path.name == "__init__.py"):
            if "medzoo --help" not in (ast.get_docstring(tree) or ""):
                undocumented.append(name)
    assert undocumented == []


def test_function_level_import_finder_sees_methods_and_nested_blocks(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\n\nclass A:\n    def f(self):\n        if True:\n            import numpy.linalg\n"
                    "\ndef g():\n    try:\n        from scipy import ndimage\n    except ImportError:\n        pass\n"
                    "\ndef h():\n    from .sibling import x\n")
    assert function_level_imports(path, "medzoo.x.m", False) == {
        ("medzoo.x.m", "numpy"), ("medzoo.x.m", "scipy"), ("medzoo.x.m", "medzoo.x.sibling")}
