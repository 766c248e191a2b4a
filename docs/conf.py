"""Sphinx configuration of the mixedanova documentation.

Build (from the project root, after ``pip install ".[docs]"``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The stack is the scientific Python convention: Sphinx with the PyData theme,
numpydoc for the NumPy-style docstrings, autosummary for the API reference and
MyST-NB for the Markdown pages and the notebooks (executed at build).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import mixedanova  # noqa: E402

project = "mixedanova"
author = "the mixedanova developers"
copyright = "2026, the mixedanova developers"
version = release = mixedanova.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "api/generated/*.md"]
templates_path = ["_templates"]

autosummary_generate = True
autodoc_typehints = "none"          # numpydoc's Parameters sections carry the types
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False  # autosummary lists them
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_enable_extensions = ["colon_fence", "dollarmath"]
nb_execution_mode = "force"          # the gallery's notebooks run at every build
nb_execution_timeout = 300
nb_execution_raise_on_error = True
suppress_warnings = ["mystnb.unknown_mime_type"]

toc_object_entries_show_parents = "hide"   # "fixed()", not "LinearMixedResults.fixed()"

html_theme = "pydata_sphinx_theme"
html_title = "mixedanova"
html_theme_options = {
    "navigation_depth": 3,
    "show_toc_level": 2,
}
html_static_path = ["_static"]


def _public_bases(app, name, obj, options, bases) -> None:
    """Leave the results classes' internal mixins out of "Bases:" (their methods
    are listed on the class's page)."""
    bases[:] = [b for b in bases if not b.__name__.endswith("Mixin")] or [object]


def setup(app) -> None:
    app.connect("autodoc-process-bases", _public_bases)
