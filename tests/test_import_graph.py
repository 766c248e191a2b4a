"""The package's imports go one way (issue 8).

Every module of ``mixedanova`` is parsed with :mod:`ast`; each ``import`` and
``from ... import`` statement (also inside functions, but not inside
``if TYPE_CHECKING:`` blocks) becomes an edge to a module of the package:
``import mixedanova.x`` or ``from mixedanova import x`` with ``x`` a package points
at ``mixedanova/x/__init__.py``, ``from mixedanova.x import y`` at the submodule
``mixedanova.x.y`` when ``y`` is one, else at ``mixedanova.x``.  The graph must
have no cycle, and the layers must not import upwards: the likelihood, moments
and inference code never import the model or the results, the report never
imports the results.
"""
from __future__ import annotations

import ast
from pathlib import Path

import mixedanova

PKG = "mixedanova"
ROOT = Path(mixedanova.__file__).resolve().parent


def _module_files(root: Path, pkg: str) -> dict[str, Path]:
    """``{dotted module name: file}``; a package is named by its folder."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [pkg, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes of ``tree``, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, node: ast.ImportFrom, is_package: bool) -> str | None:
    """Absolute module name of a ``from`` import's base."""
    if node.level == 0:
        return node.module
    parts = name.split(".")
    base = parts if is_package else parts[:-1]
    up = node.level - 1
    if up > len(base) - 1:
        return None
    base = base[:len(base) - up] if up else base
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = ROOT, pkg: str = PKG) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``."""
    files = _module_files(root, pkg)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(name, node, is_package)
                if base is None:
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in files else base)
            for t in targets:
                if t == pkg or t.startswith(pkg + "."):
                    # the longest prefix that is a module of the package
                    while t not in files and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t in files and t != name:
                        graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative DFS)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {n: WHITE for n in graph}
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        path = [start]
        iters = [iter(sorted(graph[start]))]
        color[start] = GREY
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = BLACK
                iters.pop()
                continue
            c = color.get(nxt, WHITE)
            if c == GREY:
                return path[path.index(nxt):] + [nxt]
            if c == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_finds_a_cycle():
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": set()}
    cycle = find_cycle(toy)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"b"}}) is None
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_walker_finds_a_cycle_in_a_toy_package(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text('"""light"""\n')
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..a import f\n"
        "def g():\n    from toy.sub import c\n")
    (pkg / "sub" / "c.py").write_text("def h():\n    import toy.a\n")
    graph = import_graph(pkg, "toy")
    assert graph["toy.a"] == {"toy.sub.b"}
    assert graph["toy.sub.b"] == {"toy.sub.c"}  # the TYPE_CHECKING import is ignored
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"toy.a", "toy.sub.b", "toy.sub.c"}
    (pkg / "sub" / "c.py").write_text("import toy.sub\n")
    graph = import_graph(pkg, "toy")
    assert graph["toy.sub.c"] == {"toy.sub"}
    assert find_cycle(graph) is None


def test_graph_sees_imports_inside_functions():
    graph = import_graph()
    # lazy imports in method bodies count ...
    assert "mixedanova.inference.tables" in graph["mixedanova.results.lmm"]
    assert "mixedanova.report.summary" in graph["mixedanova.results.lmm"]
    # ... and submodules named in "from package import module" are resolved
    assert "mixedanova.likelihood.optimizer" in graph["mixedanova.model"]
    assert "mixedanova.moments.ems" in graph["mixedanova.moments.moments"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_go_one_way():
    graph = import_graph()
    forbidden = {
        ("mixedanova.inference", "mixedanova.model"),
        ("mixedanova.inference", "mixedanova.results"),
        ("mixedanova.likelihood", "mixedanova.model"),
        ("mixedanova.likelihood", "mixedanova.results"),
        ("mixedanova.moments", "mixedanova.model"),
        ("mixedanova.moments", "mixedanova.results"),
        ("mixedanova.report", "mixedanova.results"),
        # issue 17: the design stage imports no engine, inference, results or model
        ("mixedanova.design", "mixedanova.likelihood"),
        ("mixedanova.design", "mixedanova.moments"),
        ("mixedanova.design", "mixedanova.inference"),
        ("mixedanova.design", "mixedanova.results"),
        ("mixedanova.design", "mixedanova.model"),
    }

    def under(mod: str, pkg: str) -> bool:
        return mod == pkg or mod.startswith(pkg + ".")

    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                 for src, dst in forbidden if under(m, src) and under(t, dst))
    assert not bad, "\n".join(bad)


def test_import_loads_no_heavy_dependency():
    # issue 11: `import mixedanova` pays for numpy and pandas only; scipy, formulaic
    # and the likelihood engine are imported where a fit needs them (the figure is in
    # benchmarks/bench_import.py, not here)
    import subprocess
    import sys

    code = ("import sys, mixedanova; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'formulaic', "
            "'matplotlib'}), 'mixedanova.likelihood.optimizer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(ROOT.parent)).stdout.strip()
    assert out == "[] False", out
