"""One data variable as integer level codes (and its numbers, when numeric).

This is what the method-of-moments engine reads (:mod:`mixedanova.moments.anova_data`):
the grouping and fixed-term variables of a design as codes, so that the engine
works on vectors, not on the DataFrame.  Levels are ordered as for the
grouping factors of :mod:`mixedanova.design.build` (and pandas' sorted
``groupby``): categories in their given order, numbers numerically, strings
sorted; levels that do not occur are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["VariableCodes", "variable_codes", "row_codes"]


@dataclass(frozen=True, eq=False)
class VariableCodes:
    """A variable of the rows used, coded.

    Attributes
    ----------
    name : str
        The data column.
    codes : numpy.ndarray
        Level index (``0 .. len(levels) - 1``) of every row.
    levels : tuple
        The observed levels, in level order.
    values : numpy.ndarray or None
        The values as floats when the column is numeric (booleans included),
        else None.
    boolean : bool
        The column is boolean (a factor, not a covariate, by default).
    dtype : str
        The column's dtype (for messages).
    """

    name: str
    codes: np.ndarray
    levels: tuple
    values: np.ndarray | None = None
    boolean: bool = False
    dtype: str = ""

    @property
    def nlev(self) -> int:
        """Number of observed levels."""
        return len(self.levels)

    @property
    def numeric(self) -> bool:
        """Numeric and not boolean: a covariate when it enters a fixed term (formulaic, R)."""
        return self.values is not None and not self.boolean


def variable_codes(column: pd.Series, name: str) -> VariableCodes:
    """Code ``column`` (no missing values) as a :class:`VariableCodes`."""
    cat = pd.Categorical(column).remove_unused_categories()
    numeric = pd.api.types.is_numeric_dtype(column)
    return VariableCodes(name=name, codes=np.asarray(cat.codes, dtype=np.intp),
                         levels=tuple(cat.categories),
                         values=column.to_numpy(dtype=float) if numeric else None,
                         boolean=bool(pd.api.types.is_bool_dtype(column)),
                         dtype=str(column.dtype))


def row_codes(keys: np.ndarray) -> tuple[int, np.ndarray]:
    """The number of distinct rows of the integer array ``keys`` and each row's
    index among them in lexicographic order (``np.unique(keys, axis=0,
    return_inverse=True)``, without its slow sort of rows): the columns packed
    into one integer where their ranges allow."""
    if not len(keys):
        return 0, np.zeros(0, dtype=np.intp)
    lo = keys.min(axis=0)
    span = keys.max(axis=0) - lo + 1
    if float(np.prod(span.astype(float))) < 2.0 ** 62:
        packed = np.zeros(len(keys), dtype=np.int64)
        for j in range(keys.shape[1]):  # the first column most significant
            packed = packed * span[j] + (keys[:, j] - lo[j])
        uniq, codes = np.unique(packed, return_inverse=True)
    else:
        uniq, codes = np.unique(keys, axis=0, return_inverse=True)
    return len(uniq), codes.ravel().astype(np.intp)
