"""The documentation site (issue 22): every public name has an API entry, and the
site builds with warnings as errors (notebooks executed).

Build command (documented in docs/conf.py and the README):
``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""
from __future__ import annotations

import inspect
import re
from functools import cached_property
import subprocess
import sys
from pathlib import Path

import pytest

import mixedanova as ma

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _api_entries() -> set[str]:
    text = (DOCS / "api" / "index.rst").read_text(encoding="utf-8")
    return set(re.findall(r"^   ([A-Za-z_][A-Za-z0-9_]*)\s*$", text, flags=re.M))


def test_every_public_name_has_an_api_entry():
    missing = sorted(set(ma.__all__) - _api_entries())
    assert not missing, f"names in mixedanova.__all__ without an API entry: {missing}"
    unknown = sorted(_api_entries() - set(ma.__all__))
    assert not unknown, f"API entries that are not public names: {unknown}"


def test_namespace_shows_only_the_public_api():
    # issue 22: besides __all__, the top level holds only the package's own
    # subpackages and modules under their own names (no re-exported internals)
    import types
    extra = [n for n in dir(ma) if not n.startswith("_") and n not in ma.__all__]
    for name in extra:
        obj = getattr(ma, name)
        assert isinstance(obj, types.ModuleType) and obj.__name__ == f"mixedanova.{name}", \
            f"mixedanova.{name} is an internal re-exported at the top level"


RESULTS = (ma.LinearMixedResults, ma.AnovaResults, ma.GlmmResults)


def _public_members(cls) -> list[str]:
    """Public methods and properties of a results class, inherited ones included."""
    return [name for name, member in inspect.getmembers(cls)
            if not name.startswith("_") and (inspect.isfunction(member)
                                             or isinstance(member, (property, cached_property)))]


def test_results_classes_are_documented_with_their_methods():
    # the class template lists members, inherited ones too (the mixins'), so every
    # public method with a docstring gets an entry; one without a docstring would not
    template = (DOCS / "_templates" / "autosummary" / "class.rst").read_text()
    assert ":members:" in template and ":inherited-members:" in template
    for cls in RESULTS:
        assert _public_members(cls)
        for name in _public_members(cls):
            assert inspect.getdoc(getattr(cls, name)), f"{cls.__name__}.{name} has no docstring"


def test_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=900)
    problems = [line for line in out.stderr.splitlines()
                if ("WARNING" in line or "ERROR" in line) and "IPKernelApp" not in line]
    assert out.returncode == 0 and not problems, "\n".join(problems) or out.stderr[-2000:]
    html = tmp_path / "html"
    for page in ("index.html", "coming_from_r.html", "api/index.html",
                 "api/generated/mixedanova.lmm.html",
                 "api/generated/mixedanova.LinearMixedResults.html"):
        assert (html / page).exists(), page
    # every public method of the results classes has an entry on its class's page
    for cls in RESULTS:
        page = (html / "api" / "generated" / f"mixedanova.{cls.__name__}.html").read_text(
            encoding="utf-8")
        missing = [n for n in _public_members(cls)
                   if f'id="mixedanova.{cls.__name__}.{n}"' not in page]
        assert not missing, f"{cls.__name__}: no API entry for {missing}"
    # the notebooks render executed: their outputs are in the pages
    nb = (html / "notebooks" / "02_random_blocks.html").read_text(encoding="utf-8")
    assert "cell_output" in nb
