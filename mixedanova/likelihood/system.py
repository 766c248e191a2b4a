"""Choice of the blocked layout for a set of random-effects terms.

:func:`build_system` forms the cross-products of ``[Z X y]`` in the layout that
suits the terms: :class:`~mixedanova.likelihood.nested.NestedSystem` when every
term's grouping factor is nested in the next one's, otherwise
:class:`~mixedanova.likelihood.crossed.CrossedSystem`.  It lives apart from
:mod:`mixedanova.likelihood.blocked`, whose shared pieces both layouts import.
"""
from __future__ import annotations

import numpy as np

from ..errors import FitError
from .blocked import TermData
from .crossed import CrossedSystem
from .nested import NestedSystem, nesting_maps
from .permuted import PermutedSystem

__all__ = ["build_system", "dense_order", "standardize_response"]


def build_system(terms: list[TermData], X: np.ndarray, y: np.ndarray):
    """Form the cross-products of ``[Z X y_std]`` in the layout that suits ``terms``.

    ``y_std = (y - X y_shift) / y_scale`` (see :func:`standardize_response`); the
    system keeps ``XY``, ``y_shift`` and ``y_scale``, and its factors report
    ``pwrss`` and the solution on the scale of ``y``.
    """
    shift, scale = standardize_response(X, y)
    XY = np.column_stack([X, (y - X @ shift) / scale])
    maps = nesting_maps(terms)
    if maps is not None:
        system = NestedSystem(terms, XY, maps)
    elif terms[0].rows is not None:  # whitened: several levels per row (see .permuted)
        first = next((k for k, t in enumerate(terms) if t.rows is None), None)
        if first is None:
            raise NotImplementedError("no random term has one level per row")
        order = [first] + [k for k in range(len(terms)) if k != first]
        system = PermutedSystem(CrossedSystem([terms[k] for k in order], XY), order, terms)
    else:
        system = CrossedSystem(terms, XY)
    inner = getattr(system, "inner", None)  # a PermutedSystem's factors are the inner's
    for part in (system,) if inner is None else (system, inner):
        part.XY, part.y_shift, part.y_scale = XY, shift, scale
    return system


def dense_order(system) -> int:
    """Order of the dense Schur complement an evaluation of ``system`` factors
    (0 for the nested layout, whose algebra is batched small blocks; a permuted
    system is asked through the one it wraps)."""
    return int(getattr(getattr(system, "inner", system), "r", 0))


def standardize_response(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """``(b0, s)``: least-squares fit of ``y`` on ``X`` (none without fixed effects)
    and the root mean square of what it leaves.

    The profiled objective changes by known terms only (``2 nu log s``), the fixed
    effects by ``b0`` and the scale.

    Raises
    ------
    FitError
        The response is constant, or the fixed effects fit it exactly: nothing
        is left for the variance components.
    """
    if not np.all(np.isfinite(y)):
        raise FitError("the response has non-finite values")
    p = X.shape[1]
    shift = np.linalg.lstsq(X, y, rcond=None)[0] if p else np.zeros(0)
    r = y - X @ shift if p else y
    scale = float(np.sqrt(np.mean(r * r)))
    size = float(np.max(np.abs(y))) if len(y) else 0.0
    if not scale > 1e-12 * size:
        if len(y) == 0 or np.ptp(y) == 0.0:
            raise FitError("the response is constant: there is no variation to estimate "
                           "variance components from")
        raise FitError("the fixed effects fit the response exactly (residual sum of squares "
                       "0): no variation is left for the random effects or the residual")
    return shift, scale
