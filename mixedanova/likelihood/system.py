"""Choice of the blocked layout for a set of random-effects terms.

:func:`build_system` forms the cross-products of ``[Z X y]`` in the layout that
suits the terms: :class:`~mixedanova.likelihood.nested.NestedSystem` when every
term's grouping factor is nested in the next one's, otherwise
:class:`~mixedanova.likelihood.crossed.CrossedSystem`.  It lives apart from
:mod:`mixedanova.likelihood.blocked`, whose shared pieces both layouts import.
"""
from __future__ import annotations

import numpy as np

from .blocked import TermData
from .crossed import CrossedSystem
from .nested import NestedSystem, nesting_maps
from .permuted import PermutedSystem

__all__ = ["build_system"]


def build_system(terms: list[TermData], X: np.ndarray, y: np.ndarray):
    """Form the cross-products of ``[Z X y]`` in the layout that suits ``terms``."""
    XY = np.column_stack([X, y])
    maps = nesting_maps(terms)
    if maps is not None:
        return NestedSystem(terms, XY, maps)
    if terms[0].rows is not None:  # whitened: several levels per row (see .permuted)
        first = next((k for k, t in enumerate(terms) if t.rows is None), None)
        if first is None:
            raise NotImplementedError("no random term has one level per row")
        order = [first] + [k for k in range(len(terms)) if k != first]
        return PermutedSystem(CrossedSystem([terms[k] for k in order], XY), order, terms)
    return CrossedSystem(terms, XY)
