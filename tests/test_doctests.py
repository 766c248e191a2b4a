"""The examples in the package's docstrings run as doctests (issue 22).

Every module of ``mixedanova`` is imported and its docstrings' ``>>>`` examples
run with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` (outputs are rounded in the
examples, so they are stable).  A module that cannot be imported because an
optional extra (dask, matplotlib) is missing has no examples run, and that is
said in the skip reason; every other import error fails.
"""
from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import warnings

import pytest

import mixedanova

OPTIONAL = {"dask", "distributed", "matplotlib", "pyarrow", "threadpoolctl"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = ["mixedanova"]
    for info in pkgutil.walk_packages(mixedanova.__path__, "mixedanova."):
        if info.name != "mixedanova.__main__":
            names.append(info.name)
    return sorted(names)


def _with_examples() -> list[str]:
    """Modules whose source has a ``>>>`` line (read as text, so nothing is imported)."""
    out = []
    for name in _modules():
        spec = importlib.util.find_spec(name)
        if spec and spec.origin and spec.origin.endswith(".py"):
            with open(spec.origin, encoding="utf-8") as fh:
                if ">>>" in fh.read():
                    out.append(name)
    return out


MODULES = _with_examples()


def test_the_main_functions_have_examples():
    # the front doors of the package carry an Examples section that runs
    for obj in (mixedanova.lmm, mixedanova.glmm, mixedanova.lmm_many,
                mixedanova.compare, mixedanova.LinearMixedResults.fixed,
                mixedanova.LinearMixedResults.emmeans, mixedanova.LinearMixedResults.anova,
                mixedanova.AnovaResults.ems_table, mixedanova.GlmmResults.summary):
        assert ">>>" in (obj.__doc__ or ""), f"{obj.__qualname__} has no example"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"optional dependency {exc.name} is not installed")
        raise
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but no doctest was found"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in tests:
            runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
