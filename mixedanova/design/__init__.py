"""Design stage: formula -> model matrices, codebooks and the theta layout.

Modules
-------
formula
    Parsing of lme4-style formulas (fixed part, random terms, ``||``, ``/``, ``:``).
data_checks
    Column checks, missing-value handling, numeric coercion.
term_matrices
    Fixed-effects terms and their columns (formulaic, with the encoding state kept).
build
    :func:`~mixedanova.design.build.build_design` and the :class:`~mixedanova.design.build.Design`.
matrices
    Dense and sparse ``Z``, ``G``, ``R`` and ``V`` of a design, for display.
variables
    A data variable as level codes and numbers (the method of moments' input).
theta
    :class:`~mixedanova.design.theta.ThetaLayout`: ``Lambda(theta)`` in lme4's order.

Nothing here imports an engine (likelihood, moments), the inference or the results.
"""
from ..errors import DesignError
from .build import Design, build_design, group_labels

__all__ = ["Design", "DesignError", "build_design", "group_labels"]
