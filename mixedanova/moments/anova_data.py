"""What the method-of-moments engine reads: the response and coded variables.

:class:`AnovaData` holds the response vector and, per variable of the model,
its level codes (and its numbers when numeric, for covariates), as
:class:`~mixedanova.design.variables.VariableCodes`.  The engine
(:func:`mixedanova.moments.moments.fit_anova_data` and what it calls) works
on these vectors only.  Two doors build one:

* ``lmm(..., method="ANOVA")`` takes ``y`` and the codes from the model's
  :class:`~mixedanova.design.build.Design` (``Design.y``, ``Design.variable``);
* :func:`anova_data` codes the columns of a DataFrame, for the DataFrame
  functions (:func:`~mixedanova.moments.moments.fit_anova`,
  :func:`~mixedanova.moments.anova_design.prepare_terms`,
  :func:`~mixedanova.moments.sums_of_squares.sequential_ss`), after checking
  them (unknown columns, missing values, a non-numeric response).

A third door is a table of *cells* (one row per observed combination of the
variables) with the number of observations of each cell in ``counts``, the
cell means in ``y`` and the pooled within-cell sum of squares in ``within_ss``
(a fit on a Dask data frame, from a distributed group-by): every sum of squares
of the engine is a function of these (the terms are constant within a cell).

What still reads DataFrame columns: ``Design.variable`` codes a column of the
design's own (complete-row) data, in the design stage; and :func:`anova_data`
for the DataFrame functions.  Nothing of the engine itself does, and the
response is never written back into a frame.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..design.variables import VariableCodes, variable_codes
from ..errors import DesignError

__all__ = ["AnovaData", "anova_data"]


@dataclass(frozen=True, eq=False)
class AnovaData:
    """The response and the coded variables of a method-of-moments fit.

    Attributes
    ----------
    y : numpy.ndarray
        The response, one value per row.
    response : str
        Its label (for the table).
    variables : tuple of VariableCodes
        Every variable of the fixed and random terms, same rows as ``y``.
    counts : numpy.ndarray or None
        For a table of cells: the observations of each row (cell), whose mean
        is ``y``; None: each row is one observation.
    within_ss : float
        For a table of cells: the sum of squares of the observations about
        their cell means (0 otherwise).
    """

    y: np.ndarray
    response: str
    variables: tuple[VariableCodes, ...]
    counts: np.ndarray | None = None
    within_ss: float = 0.0

    @property
    def nobs(self) -> int:
        """Number of observations (the sum of ``counts`` for a table of cells)."""
        if self.counts is not None:
            return int(round(float(np.sum(self.counts))))
        return int(self.y.size)

    @property
    def nrows(self) -> int:
        """Number of rows of ``y`` and the codes (cells for a table of cells)."""
        return int(self.y.size)

    @property
    def row_weights(self) -> np.ndarray:
        """Observations per row (ones unless a table of cells), as floats."""
        if self.counts is None:
            return np.ones(self.nrows)
        return np.asarray(self.counts, dtype=float)

    @property
    def names(self) -> tuple[str, ...]:
        """The variables' names."""
        return tuple(v.name for v in self.variables)

    def variable(self, name: str) -> VariableCodes:
        """The variable called ``name`` (a :class:`DesignError` when there is none)."""
        for v in self.variables:
            if v.name == name:
                return v
        raise DesignError(f"variable {name!r} is not a column of the data")

    def codes(self, names: Sequence[str]) -> tuple[np.ndarray, int]:
        """Integer codes of the observed level combinations of ``names`` and their number.

        Combinations are numbered in the lexicographic order of the variables'
        levels (pandas' sorted ``groupby(names).ngroup()``); no variables: one level.
        """
        if not names:
            return np.zeros(self.nrows, dtype=np.int64), 1
        parts = [self.variable(x) for x in names]
        if len(parts) == 1:
            return parts[0].codes.astype(np.int64, copy=False), parts[0].nlev
        radix = [max(p.nlev, 1) for p in parts]
        if float(np.prod(radix, dtype=float)) < 2.0**62:
            key = np.zeros(self.nrows, dtype=np.int64)
            for p, r in zip(parts, radix):
                key = key * r + p.codes
            _, codes = np.unique(key, return_inverse=True)
        else:
            _, codes = np.unique(np.column_stack([p.codes for p in parts]), axis=0,
                                 return_inverse=True)
        codes = np.asarray(codes, dtype=np.int64).ravel()
        return codes, int(codes.max()) + 1


def anova_data(frame: pd.DataFrame, response: str, names: Sequence[str]) -> AnovaData:
    """Code the columns ``names`` of ``frame`` and take ``frame[response]`` as ``y``.

    Raises
    ------
    DesignError
        ``response`` or a variable is not a column, the response is not numeric,
        a used column has missing values, no rows.
    """
    if response not in frame.columns:
        raise DesignError(f"response {response!r} is not a column of the data")
    resp = frame[response]
    if not pd.api.types.is_numeric_dtype(resp) or pd.api.types.is_bool_dtype(resp):
        raise DesignError(f"response {response!r} must be numeric, got dtype {resp.dtype}")
    names = list(dict.fromkeys(names))
    for x in names:
        if x not in frame.columns:
            raise DesignError(f"variable {x!r} is not a column of the data")
    for x in dict.fromkeys([response, *names]):
        n_na = int(frame[x].isna().sum())
        if n_na:
            raise DesignError(f"column {x!r} has {n_na} missing value(s); pass complete rows only")
    if len(frame) == 0:
        raise DesignError("no observations")
    return AnovaData(y=resp.to_numpy(dtype=float), response=response,
                     variables=tuple(variable_codes(frame[x], x) for x in names))
