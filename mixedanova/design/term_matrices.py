"""Model matrices of formula terms: built for the fit, rebuilt for new data.

:func:`term_matrix` turns one side of a formula (the fixed part, or a random
term's left-hand side) into columns: an intercept and plain numeric columns
directly (:class:`SimpleSpec`, the same columns and names as formulaic), anything
else through formulaic.  The spec it returns rebuilds the columns on new data
(:func:`model_matrix_like`), refusing levels not seen in the fit.  For the fixed
part, :func:`independent_columns` finds the aliased columns (lme4's rank check)
and :func:`fixed_terms` maps formulaic's terms to the kept columns of ``X``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .data_checks import (as_numeric, check_levels, excerpt, foreign_detail, plain_strings,
                          short_repr)
from ..errors import DesignError
from .formula import split_summands

__all__ = ["SimpleSpec", "FixedTerm", "simple_spec", "term_matrix", "model_matrix_like", "as_float",
           "independent_columns", "fixed_terms"]

_RANK_TOL = 1e-7  # lme4's chkRank.drop.cols uses qr(X, tol = 1e-7)


@dataclass(frozen=True)
class SimpleSpec:
    """Model matrix of an intercept and numeric columns, built without formulaic.

    Gives the same columns and names as formulaic for formulas such as
    ``"1 + Days"`` or ``"0 + x"``; anything else goes to formulaic.
    """

    intercept: bool
    columns: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return (("Intercept",) if self.intercept else ()) + self.columns

    @property
    def term_slices(self) -> dict:
        """Term -> column slice, like formulaic's ``ModelSpec.term_slices``."""
        names = self.column_names
        return {_SimpleTerm("1" if n == "Intercept" else n): slice(i, i + 1)
                for i, n in enumerate(names)}

    def get_model_matrix(self, data: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(data), len(self.column_names)), order="F")  # columns contiguous
        if self.intercept:
            out[:, 0] = 1.0
        for j, c in enumerate(self.columns, start=int(self.intercept)):
            out[:, j] = data[c].to_numpy(dtype=float)
        return out


@dataclass(frozen=True)
class _SimpleTerm:
    """A one-variable term (or the intercept ``"1"``) with formulaic's ``factors``."""

    name: str

    @property
    def factors(self) -> tuple[str, ...]:
        return (self.name,)

    def __str__(self) -> str:
        return self.name


def simple_spec(expr: str, data: pd.DataFrame) -> SimpleSpec | None:
    """A :class:`SimpleSpec` when ``expr`` is only ``1``/``0``/``-1`` and numeric columns."""
    intercept, columns = True, []
    for sign, _, text in split_summands(expr):
        t = text.strip()
        if t in ("0", "1"):
            if (t == "0") == (sign == "+"):
                intercept = False
            continue
        if sign != "+" or t not in data.columns or t in columns:
            return None
        col = data[t]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            return None
        columns.append(t)
    return SimpleSpec(intercept, tuple(columns))


@dataclass(frozen=True)
class FixedTerm:
    """A term of the fixed part (formulaic's term) and its columns in ``X``."""

    name: str
    variables: tuple[str, ...]
    columns: tuple[int, ...]


def term_matrix(expr: str, data: pd.DataFrame,
                what: str) -> tuple[np.ndarray, list[str], object]:
    """The ``(n, k)`` model matrix of formula ``expr`` on ``data``, its column names
    (formulaic's) and the spec that rebuilds it (:func:`model_matrix_like`).

    ``what`` names the matrix in the :class:`DesignError` raised when formulaic
    cannot build it (``"cannot build {what}: ..."``).
    """
    from formulaic import model_matrix
    simple = simple_spec(expr, data)
    if simple is not None:
        return simple.get_model_matrix(data), list(simple.column_names), simple
    try:
        # a numpy matrix: formulaic's pandas output costs ~40% more (fev's MMRM design)
        mm = model_matrix(expr, data, na_action="ignore", output="numpy")
        if np.asarray(mm).dtype != object:
            names = [str(c) for c in mm.model_spec.column_names]
            return np.asarray(mm, dtype=float).reshape(len(data), -1), names, mm.model_spec
    except Exception:  # formulaic raises many types: the pandas route says which
        pass
    try:
        mm = model_matrix(expr, data, na_action="ignore")
    except Exception as exc:  # formulaic raises many types
        raise DesignError(f"cannot build {what}: {foreign_detail(exc)}") from None
    return (as_float(mm, what).reshape(len(data), -1), [str(c) for c in mm.columns],
            mm.model_spec)


def as_float(mm, what: str) -> np.ndarray:
    """A model matrix as floats; a column that is not numbers (a transform that
    returned text, say) is a :class:`DesignError` naming the column, with a short
    excerpt of one value (never the values themselves)."""
    try:
        return np.asarray(mm, dtype=float)
    except (TypeError, ValueError):
        pass
    frame = pd.DataFrame(mm) if not isinstance(mm, pd.DataFrame) else mm
    for col in frame.columns:
        try:
            np.asarray(frame[col], dtype=float)
        except (TypeError, ValueError):
            value = next((v for v in frame[col] if not isinstance(v, (int, float))), None)
            raise DesignError(f"{what}: column {excerpt(col)} is not numeric (a value such "
                              f"as {short_repr(value)}); a transform must give numbers") \
                from None
    raise DesignError(f"{what}: the columns are not numeric")


def model_matrix_like(spec, data: pd.DataFrame, role: str) -> np.ndarray:
    """``spec``'s model matrix on new ``data``, refusing what formulaic lets pass.

    formulaic encodes a level not seen in the fit as all zeros (the reference
    level) with only a warning; here that is a :class:`DesignError` naming the
    factor and the level.  Columns must have the kind they had in the fit.
    """
    if isinstance(spec, SimpleSpec):
        data = data.assign(**{c: as_numeric(data[c], c, role) for c in spec.columns})
        return spec.get_model_matrix(data)
    data = check_levels(spec, data, role)
    try:
        mm = spec.get_model_matrix(plain_strings(data))
    except Exception as exc:  # formulaic's errors on data it cannot encode
        raise DesignError(f"cannot rebuild the {role} columns from newdata: "
                          f"{foreign_detail(exc)}") from None
    return as_float(mm, f"the {role} columns of newdata").reshape(len(data), -1)


def independent_columns(X: np.ndarray, tol: float = _RANK_TOL) -> np.ndarray:
    """Keep a column unless it is (numerically) a combination of earlier kept ones.

    As R's ``qr(X, tol = 1e-7)`` with limited pivoting (what lme4 uses): a column
    whose norm after projecting out the kept columns falls below ``tol`` times its
    original norm is aliased.
    """
    n, p = X.shape
    keep = np.zeros(p, dtype=bool)
    Q = np.empty((n, 0))
    for j in range(p):
        x = X[:, j]
        norm0 = np.linalg.norm(x)
        if norm0 == 0.0:
            continue
        r = x - Q @ (Q.T @ x)
        r = r - Q @ (Q.T @ r)  # reorthogonalize
        nr = np.linalg.norm(r)
        if nr > tol * norm0:
            keep[j] = True
            Q = np.column_stack([Q, r / nr])
    return keep


def fixed_terms(spec: object, kept_idx: np.ndarray) -> tuple[FixedTerm, ...]:
    pos = {int(c): i for i, c in enumerate(kept_idx)}
    out = []
    for term, sl in spec.term_slices.items():
        cols = tuple(pos[c] for c in range(sl.start, sl.stop) if c in pos)
        variables = tuple(str(f) for f in term.factors if str(f) != "1")
        name = "(Intercept)" if not variables else str(term)
        out.append(FixedTerm(name=name, variables=variables, columns=cols))
    return tuple(out)
