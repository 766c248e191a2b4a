"""Choice of the blocked layout for a set of random-effects terms.

:func:`build_system` takes the cross-products of ``[Z X Y]``
(:class:`~mixedanova.likelihood.crossprod.CrossProducts`, standardized) and
puts them in the layout that suits the terms:
:class:`~mixedanova.likelihood.nested.NestedSystem` when every term's grouping
factor is nested in the next one's, otherwise
:class:`~mixedanova.likelihood.crossed.CrossedSystem` (wrapped in a
:class:`~mixedanova.likelihood.permuted.PermutedSystem` when the design's first
term has several levels per row).  No layout reads the rows.
"""
from __future__ import annotations

from .crossed import CrossedSystem
from .crossed_blocked import BlockedCrossedSystem, use_blocked
from .crossprod import CrossProducts
from .nested import NestedSystem, nesting_maps
from .permuted import PermutedSystem

__all__ = ["build_system", "dense_order"]


def build_system(cp: CrossProducts):
    """The blocked system of the standardized cross-products ``cp``
    (:meth:`CrossProducts.standardized` is applied if it was not)."""
    cp = cp.standardized()
    maps = nesting_maps(cp)
    if maps is not None:
        return NestedSystem(cp, maps)
    if not cp.terms[0].one_per_row:  # whitened: several levels per row (see .permuted)
        first = next((k for k, t in enumerate(cp.terms) if t.one_per_row), None)
        if first is None:
            raise NotImplementedError("no random term has one level per row")
        order = [first] + [k for k in range(len(cp.terms)) if k != first]
        return PermutedSystem(CrossedSystem(cp.permuted(order)), order, cp.terms)
    if use_blocked(cp):  # too large for any per-entry structure (see .crossed_blocked)
        return BlockedCrossedSystem(cp)
    return CrossedSystem(cp)


def dense_order(system) -> int:
    """Order of the dense Schur complement an evaluation of ``system`` factors
    (0 for the nested layout, whose algebra is batched small blocks; a permuted
    system is asked through the one it wraps)."""
    return int(getattr(getattr(system, "inner", system), "r", 0))
