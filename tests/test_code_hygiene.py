"""Code hygiene checked by parsing the sources with :mod:`ast` (issue 17).

* No test module imports another test module: helpers several test files need live
  in ``tests/_*.py`` or ``tests/conftest.py`` (pytest collects ``test_*`` modules
  itself; importing one from another runs its module-level fixtures and tests twice
  and ties unrelated files together).
* No module of the package imports a private name (leading underscore, not a
  dunder) from another module of the package: ``from .x import _helper`` (relative
  or absolute) and ``from . import _module`` both count, a private module being as
  much an implementation detail as a private function.  What one module needs from
  another is public (named without the underscore, listed in ``__all__``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mixedanova

TESTS = Path(__file__).resolve().parent
PKG_ROOT = Path(mixedanova.__file__).resolve().parent
PKG = "mixedanova"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path, root: Path, pkg: str) -> tuple[str, bool]:
    """``(dotted name, is_package)`` of ``path`` under ``root`` (the package ``pkg``)."""
    parts = [pkg, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """Absolute name of the module a ``from`` import reads from."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if node.level > 1:
        parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def private_imports(root: Path, pkg: str) -> list[str]:
    """``"file:line: from X import _y"`` for each private name one module of ``pkg``
    (the package in folder ``root``) imports from another."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root, pkg)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = _base(node, module, is_package)
                if base != pkg and not base.startswith(pkg + "."):
                    continue
                if base == module and not is_package:
                    continue    # a module importing from itself
                for alias in node.names:
                    if _is_private(alias.name) or any(_is_private(p) for p in base.split(".")):
                        out.append(f"{path.relative_to(root.parent)}:{node.lineno}: "
                                   f"from {base} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == pkg and any(_is_private(p) for p in parts):
                        out.append(f"{path.relative_to(root.parent)}:{node.lineno}: "
                                   f"import {alias.name}")
    return out


def imported_test_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` for each import of a module named ``test_*`` (at any depth,
    also ``from tests import test_x`` and ``from tests.sub.test_x import y``)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if _names_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if _names_test_module(base):
                out.append((node.lineno, base))
            else:
                out += [(node.lineno, f"{base}.{a.name}" if base else a.name)
                        for a in node.names if a.name.startswith("test_")]
    return sorted(out)


def _names_test_module(dotted: str) -> bool:
    return any(p.startswith("test_") for p in dotted.split("."))


TEST_FILES = sorted(TESTS.rglob("*.py"))


@pytest.mark.parametrize("path", TEST_FILES, ids=[str(p.relative_to(TESTS)) for p in TEST_FILES])
def test_no_test_module_imports_another(path):
    found = imported_test_modules(ast.parse(path.read_text(encoding="utf-8")))
    assert not found, (f"{path.relative_to(TESTS)} imports test module(s) "
                       f"{[name for _, name in found]} (lines {[ln for ln, _ in found]}); "
                       "move shared helpers to tests/_*.py or tests/conftest.py")


def test_no_private_name_imported_across_package_modules():
    found = private_imports(PKG_ROOT, PKG)
    assert not found, "private names imported from another module:\n" + "\n".join(found)


# ----------------------------------------------------------- the checkers can fail
def test_test_module_import_detector_catches_each_form():
    src = ("import test_lmer_reference as core\n"
           "from test_formula import helper\n"
           "from tests.likelihood.test_x import y\n"
           "from tests import test_cli\n"
           "def f():\n    import test_inner\n"
           "import _refdata\nfrom _stress import x\nimport pytest\nfrom testing import t\n")
    assert imported_test_modules(ast.parse(src)) == [
        (1, "test_lmer_reference"), (2, "test_formula"), (3, "tests.likelihood.test_x"),
        (4, "tests.test_cli"), (6, "test_inner")]


def test_private_import_detector_catches_each_form(tmp_path):
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub.a import public\n")
    (pkg / "sub" / "__init__.py").write_text("from . import _hidden\n")        # private module
    (pkg / "sub" / "_hidden.py").write_text("from ._hidden import _self_ok\n"  # same module
                                            "_self_ok = 1\n")
    (pkg / "sub" / "a.py").write_text("from ._hidden import _self_ok\n"          # relative
                                      "from fakepkg.sub.b import _x, y\n"        # absolute
                                      "import fakepkg._priv\n"
                                      "from numpy import _globals\n"             # not ours
                                      "from .b import __version__\n"             # dunder
                                      "public = 1\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..sub.a import _late\n")  # nested
    found = private_imports(pkg, "fakepkg")
    assert sorted(found) == sorted([
        "fakepkg/sub/__init__.py:1: from fakepkg.sub import _hidden",
        "fakepkg/sub/a.py:1: from fakepkg.sub._hidden import _self_ok",
        "fakepkg/sub/a.py:2: from fakepkg.sub.b import _x",
        "fakepkg/sub/a.py:3: import fakepkg._priv",
        "fakepkg/sub/b.py:2: from fakepkg.sub.a import _late",
    ])
