"""A design whose rows are built on first use.

A pandas frame fitted chunk by chunk (:mod:`mixedanova.distributed.frame_fit`)
holds only a :class:`~mixedanova.design.chunked.DesignSummary` after set-up: the
names, levels and specs, no rows.  Features that read the rows (Kenward-Roger,
``hatvalues``, ``R()`` / ``V()``, influence, ``anova``, ``emmeans``, refits)
still work: :class:`LazyDesign` answers the level-sized attributes from the
summary and builds the row-sized :class:`~mixedanova.design.build.Design` from
the frame the first time anything else is asked for (once; it is kept).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from ..errors import DesignError, RankDeficiencyWarning
from .build import Design
from .chunked import DesignSummary

__all__ = ["LazyDesign", "LazyBlock", "LEVEL_SIZED"]

# what the summary answers (the same values as the row-sized design's)
LEVEL_SIZED = frozenset({
    "formula", "x_names", "fixed_terms", "fixed_spec", "kept_columns", "nobs", "n_dropped",
    "dropped_columns", "weights_column", "offset_column", "p", "has_weights", "ngroups",
    "theta_layout", "structured", "group_names", "fixed_matrix", "offset_for",
    "needed_columns"})
_ROW_SIZED_BLOCK = frozenset({"codes", "zraw"})


class LazyBlock:
    """A random-effects block whose level codes and term matrix (``codes``,
    ``zraw``, one row per observation) come from the row-sized design when first
    read; everything else from the summary's block."""

    def __init__(self, block, design: "LazyDesign", k: int) -> None:
        self._block = block
        self._design = design
        self._k = k

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        if name in _ROW_SIZED_BLOCK:
            return getattr(self._design.full.blocks[self._k], name)
        return getattr(self._block, name)

    def __repr__(self) -> str:
        return f"<LazyBlock {self._block.source}>"


class LazyDesign:
    """A :class:`~mixedanova.design.build.Design` built from its data on first use
    of its rows.

    Parameters
    ----------
    summary : DesignSummary
        The row-less design of the chunked set-up (names, levels, specs).
    build : callable
        Returns the row-sized design (``build_design`` on the frame); called at
        most once.  Its rank-deficiency warning is not repeated (the set-up gave it).
    """

    def __init__(self, summary: DesignSummary, build: Callable[[], Design]) -> None:
        self.summary = summary
        self._build = build
        self._full: Design | None = None
        self.blocks = tuple(LazyBlock(b, self, k) for k, b in enumerate(summary.blocks))

    @property
    def built(self) -> bool:
        """True once the row-sized design exists."""
        return self._full is not None

    @property
    def full(self) -> Design:
        """The row-sized design (built on the first call).

        Raises
        ------
        DesignError
            The frame no longer gives the fitted design (its rows or columns were
            changed after the fit).
        """
        if self._full is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RankDeficiencyWarning)
                full = self._build()
            s = self.summary
            same = (full.nobs == s.nobs and full.x_names == s.x_names
                    and [(b.group, b.nlev, b.columns) for b in full.blocks]
                    == [(b.group, b.nlev, b.columns) for b in s.blocks])
            if not same:
                raise DesignError("the data frame no longer gives the fitted design (its rows "
                                  "or columns changed after the fit); fit the model again")
            self._full = full
        return self._full

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("summary", "_build", "_full", "blocks"):
            raise AttributeError(name)
        if name in LEVEL_SIZED:
            return getattr(self.summary, name)
        return getattr(self.full, name)

    @property
    def offset(self):
        """The offset per row (row-sized; None without an offset)."""
        return None if self.summary.offset is None else self.full.offset

    @property
    def weights(self) -> np.ndarray | None:
        """The prior weights per row (row-sized; None without weights)."""
        return self.full.weights if self.summary.has_weights else None

    def __repr__(self) -> str:
        return (f"<LazyDesign {self.summary.formula.formula!r}, nobs={self.summary.nobs}, "
                f"rows {'built' if self.built else 'not built'}>")
