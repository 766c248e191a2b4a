"""The rows of a design as the likelihood engine sees them.

Prior weights ``w`` (``Var(e_i) = sigma^2 / w_i``) enter by multiplying every row
of ``[Z X y]`` by ``sqrt(w_i)``: the unit-weight problem, whose criterion lacks
the log-determinant of the weight matrix (the model adds ``-sum(log w_i)``).
The offset is subtracted from the response.  The result is a
:class:`~mixedanova.likelihood.crossprod.RowBlock`, from which the cross-products
are formed once (:func:`~mixedanova.likelihood.crossprod.cross_products`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .blocked import TermData
from .crossprod import RowBlock

if TYPE_CHECKING:
    from ..design.build import Design

__all__ = ["design_rows"]


def design_rows(design: "Design") -> RowBlock:
    """Weighted rows of ``[Z X y - offset]`` of ``design`` (one block)."""
    y, X = design.y - design.offset_values, design.X
    zraws = [b.zraw for b in design.blocks]
    if design.has_weights:
        sw = np.sqrt(design.weights)
        y, X = sw * y, sw[:, None] * X
        zraws = [sw[:, None] * z for z in zraws]
    terms = tuple(TermData(b.codes, z, b.nlev) for b, z in zip(design.blocks, zraws))
    return RowBlock(terms, X, y)
