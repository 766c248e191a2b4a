"""The relative covariance factor Lambda(theta), in lme4's parameterization.

Each random-effects term ``k`` with ``q`` columns has a ``q x q`` lower-triangular
template ``T_k``; ``theta`` lists the lower-triangle entries of every template
column by column (lme4's order), terms in design order.  Diagonal entries are
bounded below by 0.  The covariance of the term's random effects for one level is
``sigma^2 T_k T_k'``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FitError

__all__ = ["ThetaLayout", "SINGULAR_TOL"]

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on a template diagonal


@dataclass(frozen=True)
class ThetaLayout:
    """Where each term's template entries sit in ``theta``.

    Attributes
    ----------
    qs : tuple of int
        Columns per term.
    offsets : tuple of int
        Start of each term's entries in ``theta``.
    names : tuple of str
        lme4's ``theta`` names (``"Subject.(Intercept)"``, ``"Subject.Days.(Intercept)"``).
    lower : numpy.ndarray
        Lower bounds: 0 for diagonal entries, ``-inf`` otherwise.
    """

    qs: tuple[int, ...]
    offsets: tuple[int, ...]
    names: tuple[str, ...]
    lower: np.ndarray

    @classmethod
    def from_terms(cls, groups: list[str], columns: list[tuple[str, ...]]) -> "ThetaLayout":
        """Layout for terms with the given group labels and column names."""
        qs, offsets, names, lower = [], [], [], []
        pos = 0
        for group, cols in zip(groups, columns):
            q = len(cols)
            qs.append(q)
            offsets.append(pos)
            for j in range(q):
                for i in range(j, q):
                    if i == j:
                        names.append(f"{group}.{cols[i]}")
                        lower.append(0.0)
                    else:
                        names.append(f"{group}.{cols[i]}.{cols[j]}")
                        lower.append(-np.inf)
            pos += q * (q + 1) // 2
        return cls(tuple(qs), tuple(offsets), tuple(names), np.array(lower))

    @property
    def size(self) -> int:
        """Length of ``theta``."""
        return len(self.names)

    def start(self) -> np.ndarray:
        """lme4's starting value: identity templates."""
        return np.where(self.lower == 0.0, 1.0, 0.0)

    def templates(self, theta: np.ndarray) -> list[np.ndarray]:
        """The lower-triangular ``q x q`` template of every term."""
        out = []
        for q, off in zip(self.qs, self.offsets):
            T = np.zeros((q, q))
            k = off
            for j in range(q):
                for i in range(j, q):
                    T[i, j] = theta[k]
                    k += 1
            out.append(T)
        return out

    def with_template(self, theta: np.ndarray, k: int, T: np.ndarray) -> np.ndarray:
        """A copy of ``theta`` with term ``k``'s template replaced by ``T``."""
        out = np.array(theta, dtype=float)
        q, off = self.qs[k], self.offsets[k]
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))  # theta runs down each column
        out[off:off + q * (q + 1) // 2] = T[rows[order], cols[order]]
        return out

    def template_columns(self, k: int) -> np.ndarray:
        """The template column of each of term ``k``'s entries of ``theta``."""
        q = self.qs[k]
        rows, cols = np.tril_indices(q)
        return cols[np.lexsort((rows, cols))]

    def check_start(self, start) -> np.ndarray:
        """A user's starting ``theta`` as a float vector, or a
        :class:`~mixedanova.errors.FitError` saying what is wrong with it (not
        numbers, the wrong length, non-finite values, a diagonal below 0)."""
        k = len(self.names)
        what = f"theta has {k} element{'s' if k != 1 else ''} ({', '.join(self.names)})"
        numbers = f"start must be {k} number{'s' if k != 1 else ''}; {what}; got {start!r}"
        if isinstance(start, (str, bytes, dict)):
            raise FitError(numbers)
        try:
            arr = np.asarray(start, dtype=float)
        except (TypeError, ValueError):
            raise FitError(numbers) from None
        if arr.ndim > 1 or arr.size != k:
            raise FitError(f"start has {arr.size} value{'s' if arr.size != 1 else ''} "
                           f"(shape {arr.shape}); {what}")
        arr = arr.reshape(k)
        if not np.all(np.isfinite(arr)):
            raise FitError(f"start has non-finite values: {arr.tolist()}")
        below = np.flatnonzero(arr < self.lower)
        if len(below):
            raise FitError(f"start: {self.names[below[0]]} = {arr[below[0]]} is below its "
                           "lower bound 0")
        return arr

    def diagonal_mask(self) -> np.ndarray:
        """True for entries of ``theta`` on a template diagonal."""
        return self.lower == 0.0
