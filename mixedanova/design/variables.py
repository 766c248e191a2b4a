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

__all__ = ["VariableCodes", "variable_codes"]


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
