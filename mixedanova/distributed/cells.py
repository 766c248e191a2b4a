"""The distributed group-by behind ``method="ANOVA"`` on a Dask data frame.

The method-of-moments engine (:mod:`mixedanova.moments`) needs, for a model whose
terms are factors, only the *cells*: the observed combinations of the model's
variables, with each cell's number of observations, mean and sum of squared
deviations about its mean (every term is constant within a cell, so every sum
of squares of the engine is a function of these;
:class:`~mixedanova.moments.anova_data.AnovaData` with ``counts``).

Each partition groups its complete rows by a packed integer key of the
variables' level codes (the codebook's levels, so every partition numbers the
cells alike) and returns a :class:`CellSums` (flat arrays, sorted keys); two
:class:`CellSums` add by merging the keys, the means and sums of squares by the
pairwise formulas of Chan, Golub and LeVeque (each cell's pieces are
re-expressed about one of its own means, so a response shifted by ``1e8``
standard deviations loses nothing).  The client receives one :class:`CellSums`
(its size is the number of observed cells, which for a crossed design with one
observation per cell is the number of rows: the method of moments needs them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..design.build import response_values
from ..design.chunked import ChunkPlan, level_codes
from ..design.variables import VariableCodes
from ..errors import DesignError
from ..moments.anova_data import AnovaData

__all__ = ["CellCodebook", "CellSums", "cell_pass", "cell_data"]

_MAX_KEY = 2 ** 62


@dataclass(frozen=True)
class CellCodebook:
    """The variables of the cells, their levels (the whole data's, in the
    in-memory design's order) and each one's multiplier in the packed key."""

    names: tuple[str, ...]
    levels: tuple  # per variable: pandas.Index of its levels
    radix: np.ndarray
    dtypes: tuple[str, ...]
    boolean: tuple[bool, ...]
    numeric: tuple[bool, ...]  # numeric dtype (booleans included), as variable_codes

    @classmethod
    def from_values(cls, names: list[str], values: dict, meta: pd.DataFrame) -> "CellCodebook":
        """Levels from the codebook pass's distinct values (``ChunkSummary.values``)."""
        levels = tuple(pd.Categorical(values[v]).remove_unused_categories().categories
                       for v in names)
        sizes = [max(len(c), 1) for c in levels]
        if float(np.prod(np.array(sizes, dtype=float))) >= _MAX_KEY:
            raise DesignError(f"method='ANOVA' on a Dask data frame: the variables "
                              f"{', '.join(names)} have too many level combinations to "
                              "number the cells")
        radix = np.ones(len(names), dtype=np.int64)
        for i in range(len(names) - 2, -1, -1):
            radix[i] = radix[i + 1] * sizes[i + 1]
        return cls(tuple(names), levels, radix, tuple(str(meta[v].dtype) for v in names),
                   tuple(bool(pd.api.types.is_bool_dtype(meta[v])) for v in names),
                   tuple(bool(pd.api.types.is_numeric_dtype(meta[v])) for v in names))

    def keys(self, data: pd.DataFrame) -> np.ndarray:
        key = np.zeros(len(data), dtype=np.int64)
        for v, cats, r in zip(self.names, self.levels, self.radix):
            c = level_codes(data[v], cats)
            if (c < 0).any():
                raise DesignError(f"a partition has a value of {v!r} that the first pass "
                                  "did not see; did the data change between the passes?")
            key += c * r
        return key


@dataclass(frozen=True)
class CellSums:
    """Cells of some rows: sorted distinct ``keys``, observations ``n``, ``mean``
    of the response and ``m2`` (sum of squared deviations about the mean)."""

    keys: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, keys: np.ndarray, y: np.ndarray) -> "CellSums":
        uniq, inv = np.unique(keys, return_inverse=True)
        inv = inv.ravel()
        m = len(uniq)
        n = np.bincount(inv, minlength=m).astype(float)
        ref = y[np.unique(inv, return_index=True)[1]]  # a value of each cell
        mean = ref + np.bincount(inv, weights=y - ref[inv], minlength=m) / n
        d = y - mean[inv]
        return cls(uniq, n, mean, np.bincount(inv, weights=d * d, minlength=m))

    def __add__(self, other: "CellSums") -> "CellSums":
        if other is None:
            return self
        keys = np.concatenate([self.keys, other.keys])
        uniq, inv = np.unique(keys, return_inverse=True)
        inv = inv.ravel()
        m = len(uniq)
        n_i = np.concatenate([self.n, other.n])
        mean_i = np.concatenate([self.mean, other.mean])
        ref = mean_i[np.unique(inv, return_index=True)[1]]
        n = np.bincount(inv, weights=n_i, minlength=m)
        mean = ref + np.bincount(inv, weights=n_i * (mean_i - ref[inv]), minlength=m) / n
        d = mean_i - mean[inv]
        m2 = np.bincount(inv, weights=np.concatenate([self.m2, other.m2]) + n_i * d * d,
                         minlength=m)
        return CellSums(uniq, n, mean, m2)

    def __radd__(self, other):
        return self if other in (0, None) else NotImplemented


def _cells_part(plan: ChunkPlan, book: CellCodebook, chunk: pd.DataFrame) -> CellSums | None:
    data, _, _ = plan.complete(chunk)
    if len(data) == 0:
        return None
    y = np.asarray(response_values(plan.parsed, data), dtype=float)
    if not np.all(np.isfinite(y)):
        raise DesignError("the response has non-finite values")
    return CellSums.of(book.keys(data), y)


def cell_pass(plan: ChunkPlan, book: CellCodebook, ddf, progress: bool = False) -> CellSums:
    """The summed :class:`CellSums` of all partitions (one pass, a tree sum)."""
    from dask import delayed

    from .passes import run_pass

    p = delayed(plan, pure=True, traverse=False)
    b = delayed(book, pure=True, traverse=False)
    parts = [delayed(_cells_part, pure=True)(p, b, part) for part in ddf.to_delayed()]
    return run_pass(parts, progress)


def cell_data(cells: CellSums, book: CellCodebook, response: str,
              center: bool) -> AnovaData:
    """The engine's table of cells; ``center``: the cell means less the grand
    mean (the sums of squares of a model with an intercept do not change)."""
    rest = cells.keys
    variables = []
    for v, cats, r, dt, boolean, numeric in zip(book.names, book.levels, book.radix,
                                                book.dtypes, book.boolean, book.numeric):
        codes, rest = np.divmod(rest, r)
        codes = codes.astype(np.intp)
        values = np.asarray(cats, dtype=float)[codes] if numeric else None
        variables.append(VariableCodes(name=v, codes=codes, levels=tuple(cats),
                                       values=values, boolean=boolean, dtype=dt))
    y = cells.mean
    if center:
        ref = y[0]
        y = y - (ref + float(np.sum(cells.n * (y - ref))) / float(np.sum(cells.n)))
    return AnovaData(y=y, response=response, variables=tuple(variables), counts=cells.n,
                     within_ss=float(np.sum(cells.m2)))
