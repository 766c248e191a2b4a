"""Model matrices for a linear mixed model.

:func:`build_design` turns a DataFrame and a parsed lme4 formula into a
:class:`Design`: the response ``y``, the fixed-effects matrix ``X`` (formulaic's
column names), and one :class:`RandomBlock` per random-effects term holding the
grouping factor (levels and integer codes), the term's own model matrix
(``zraw``, one row per observation) and the formulaic spec needed to rebuild it
for new data.  ``Z`` itself is never stored densely: the column of observation
``i`` for term ``k`` is ``codes[i] * q + j`` with value ``zraw[i, j]``.

Rows with a missing value in any used column are dropped and counted
(lme4's ``na.action = na.omit``).  Infinite values, a non-numeric response,
a grouping factor with one level and similar problems raise
:class:`DesignError` naming the column, term or level at fault.
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix

from .likelihood.theta import ThetaLayout
from .formula import ParsedFormula, RandomTermSpec, split_summands
from .errors import DesignError, RankDeficiencyWarning

__all__ = ["DesignError", "RandomBlock", "FixedTerm", "Design", "build_design",
           "RankDeficiencyWarning"]

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
        cols = [np.ones(len(data))] if self.intercept else []
        cols += [data[c].to_numpy(dtype=float) for c in self.columns]
        return np.column_stack(cols) if cols else np.empty((len(data), 0))


@dataclass(frozen=True)
class _SimpleTerm:
    """A one-variable term (or the intercept ``"1"``) with formulaic's ``factors``."""

    name: str

    @property
    def factors(self) -> tuple[str, ...]:
        return (self.name,)

    def __str__(self) -> str:
        return self.name


def _simple_spec(expr: str, data: pd.DataFrame) -> SimpleSpec | None:
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
class RandomBlock:
    """One random-effects term: ``(expr | group)``.

    Attributes
    ----------
    group : str
        Grouping-factor label, ``"a:b"`` for an interaction.
    factors : tuple of str
        Data columns that make up the grouping factor.
    expr : str
        formulaic formula of the term's left-hand side.
    source : str
        The bar term as written by the user.
    columns : tuple of str
        Names of the term's columns (lme4 style, ``"(Intercept)"`` for the intercept).
    levels : pandas.Index
        Grouping-factor levels (string labels, ``"A:1"`` for interactions).
    codes : numpy.ndarray
        Level index of every observation.
    zraw : numpy.ndarray
        ``(n, q)`` model matrix of the left-hand side.
    spec : object
        formulaic ``ModelSpec`` for rebuilding ``zraw`` on new data.
    """

    group: str
    factors: tuple[str, ...]
    expr: str
    source: str
    columns: tuple[str, ...]
    levels: pd.Index
    codes: np.ndarray
    zraw: np.ndarray
    spec: object = field(repr=False)

    @property
    def q(self) -> int:
        """Number of columns per level."""
        return self.zraw.shape[1]

    @property
    def nlev(self) -> int:
        """Number of levels."""
        return len(self.levels)

    def rebuild(self, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Codes (``-1`` for unseen levels) and ``zraw`` for new data."""
        labels = group_labels(data, self.factors)
        codes = self.levels.get_indexer(labels)
        zraw = np.asarray(self.spec.get_model_matrix(data), dtype=float)
        return codes, zraw.reshape(len(data), -1)


@dataclass(frozen=True)
class FixedTerm:
    """A term of the fixed part (formulaic's term) and its columns in ``X``."""

    name: str
    variables: tuple[str, ...]
    columns: tuple[int, ...]


@dataclass(frozen=True)
class Design:
    """Everything the estimators need, and the state to rebuild it.

    ``blocks`` are in lme4's order: sorted by decreasing number of levels, ties
    in formula order.  ``x_names`` are formulaic's column names after aliased
    columns (``dropped_columns``) were removed.
    """

    formula: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    x_names: tuple[str, ...]
    blocks: tuple[RandomBlock, ...]
    fixed_terms: tuple[FixedTerm, ...]
    fixed_spec: object = field(repr=False)
    kept_columns: np.ndarray = field(repr=False)
    row_index: pd.Index = field(repr=False)
    n_dropped: int = 0
    dropped_columns: tuple[str, ...] = ()
    data: pd.DataFrame = field(repr=False, default=None)

    @property
    def nobs(self) -> int:
        """Number of observations used."""
        return len(self.y)

    @property
    def p(self) -> int:
        """Number of fixed-effect columns."""
        return self.X.shape[1]

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels per grouping factor (lme4's ``ngrps``)."""
        out: dict[str, int] = {}
        for b in self.blocks:
            out.setdefault(b.group, b.nlev)
        return out

    def theta_layout(self) -> ThetaLayout:
        """Where each random term's template entries sit in ``theta`` (lme4's order)."""
        return ThetaLayout.from_terms([b.group for b in self.blocks],
                                      [b.columns for b in self.blocks])

    @property
    def group_names(self) -> list[str]:
        """Per term, lme4's ``VarCorr`` group name: repeated factors get ``.1``, ``.2``."""
        seen: dict[str, int] = {}
        out = []
        for b in self.blocks:
            k = seen.get(b.group, 0)
            out.append(b.group if k == 0 else f"{b.group}.{k}")
            seen[b.group] = k + 1
        return out

    def needed_columns(self, include_random: bool = True) -> list[str]:
        """Data columns needed to rebuild X (and Z when ``include_random``)."""
        needed = _formula_variables(self.formula.fixed)
        if include_random:
            for b in self.blocks:
                needed += _formula_variables(b.expr) + list(b.factors)
        cols = set(self.data.columns)
        return list(dict.fromkeys(v for v in needed if v in cols))

    def fixed_matrix(self, data: pd.DataFrame) -> np.ndarray:
        """Rebuild ``X`` (kept columns only) for new data."""
        mm = self.fixed_spec.get_model_matrix(data)
        return np.asarray(mm, dtype=float)[:, self.kept_columns]


def group_labels(data: pd.DataFrame, factors: tuple[str, ...]) -> pd.Index:
    """String labels of a (possibly interaction) grouping factor, ``"a:b"``."""
    parts = [_as_label(data[f]) for f in factors]
    labels = parts[0]
    for part in parts[1:]:
        labels = labels + ":" + part
    return pd.Index(labels, dtype=object)


def _as_label(col: pd.Series) -> np.ndarray:
    values = col.to_numpy()
    if pd.api.types.is_float_dtype(col) and np.all(np.equal(np.mod(values, 1), 0)):
        values = values.astype(np.int64)
    return np.array([str(v) for v in values], dtype=object)


def build_design(parsed: ParsedFormula, data: pd.DataFrame, *,
                 missing: str = "drop", extra_columns: tuple[str, ...] = ()) -> Design:
    """Build the :class:`Design` for ``parsed`` on ``data``.

    Parameters
    ----------
    parsed : ParsedFormula
        Output of :func:`mixedanova.formula.parse_formula`.
    data : pandas.DataFrame
        One row per observation.
    missing : {"drop", "raise"}
        ``"drop"`` (lme4's ``na.omit``) removes rows with a missing value in a used
        column and counts them; ``"raise"`` refuses such data.
    extra_columns : tuple of str
        Further columns the model needs (a residual structure's group, time or
        covariate): kept in ``Design.data`` and part of the missing-value rule.

    Raises
    ------
    DesignError
        Missing column, non-numeric response, infinite values, non-finite values
        produced by a transformation, no rows left, a grouping factor with one level,
        more random effects than observations.
    """
    if not isinstance(data, pd.DataFrame):
        raise DesignError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if missing not in ("drop", "raise"):
        raise DesignError(f"missing must be 'drop' or 'raise', not {missing!r}")
    if not parsed.random:
        raise DesignError(
            f"formula {parsed.formula!r} has no random-effects term such as (1 | group); "
            "a linear mixed model needs at least one")
    if len(data) == 0:
        raise DesignError("data has no rows")
    used = _used_columns(parsed, data)
    for col in extra_columns:
        if col not in data.columns:
            raise _missing_column_error(col, data, "residual structure")
        if col not in used:
            used.append(col)
    data, n_dropped = _complete_rows(data, used, missing)
    y = _response(parsed, data)
    X_all, spec = _fixed_matrix(parsed, data)
    names_all = list(spec.column_names)
    keep = independent_columns(X_all)
    dropped = tuple(n for n, k in zip(names_all, keep) if not k)
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
            RankDeficiencyWarning, stacklevel=3)
    kept_idx = np.flatnonzero(keep)
    X = np.ascontiguousarray(X_all[:, kept_idx])
    fixed_terms = _fixed_terms(spec, kept_idx)
    blocks = [_random_block(term, data) for term in parsed.random]
    order = sorted(range(len(blocks)), key=lambda k: -blocks[k].nlev)  # stable, as lme4
    blocks = [blocks[k] for k in order]
    _check_identifiable(blocks, len(y))
    return Design(formula=parsed, y=y, X=X, x_names=tuple(names_all[i] for i in kept_idx),
                  blocks=tuple(blocks), fixed_terms=fixed_terms, fixed_spec=spec,
                  kept_columns=kept_idx, row_index=data.index, n_dropped=n_dropped,
                  dropped_columns=dropped, data=data)


def _missing_column_error(name: str, data: pd.DataFrame, role: str) -> DesignError:
    close = difflib.get_close_matches(name, [str(c) for c in data.columns], n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return DesignError(f"column {name!r} ({role}) is not in the data{hint}")


def _used_columns(parsed: ParsedFormula, data: pd.DataFrame) -> list[str]:
    used: list[str] = []

    def add(name: str, role: str) -> None:
        if name not in data.columns:
            raise _missing_column_error(name, data, role)
        if name not in used:
            used.append(name)

    for v in _formula_variables(parsed.response):
        if v in data.columns or not _is_module(v):
            add(v, "response")
    for v in _formula_variables(parsed.fixed):
        if v in data.columns or not _is_module(v):
            add(v, "fixed effects")
    for term in parsed.random:
        for v in _formula_variables(term.expr):
            if v in data.columns or not _is_module(v):
                add(v, f"random term {term.source}")
        for v in term.factors:
            add(v, f"grouping factor of {term.source}")
    return used


def _formula_variables(expr: str) -> list[str]:
    """Data variables a formula needs (a new list each call)."""
    return list(_formula_variables_cached(expr))


@lru_cache(maxsize=256)
def _formula_variables_cached(expr: str) -> tuple[str, ...]:
    return tuple(sorted(Formula(expr).required_variables))


def _is_module(name: str) -> bool:
    return name in ("np", "numpy", "pd", "math")


def _complete_rows(data: pd.DataFrame, used: list[str],
                   missing: str) -> tuple[pd.DataFrame, int]:
    n = len(data)
    has_na = np.zeros(n, dtype=bool)
    counts: dict[str, int] = {}
    for col in used:
        s = data[col]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            vals = s.to_numpy(dtype=float, na_value=np.nan)
            bad = np.isinf(vals)
            if bad.any():
                rows = list(data.index[bad][:5])
                raise DesignError(f"column {col!r} has infinite values (rows {rows})")
            na = np.isnan(vals)
        else:
            na = s.isna().to_numpy()
        if na.any():
            counts[col] = int(na.sum())
            has_na |= na
    if counts:
        detail = ", ".join(f"{c!r} ({k} rows)" for c, k in counts.items())
        if missing == "raise":
            raise DesignError(f"missing values in {detail}; pass missing='drop' to drop them")
        if has_na.all():
            raise DesignError(f"no rows left after dropping rows with missing values in {detail}")
        return data.loc[~has_na, used], int(has_na.sum())
    return data[used], 0


def _response(parsed: ParsedFormula, data: pd.DataFrame) -> np.ndarray:
    name = parsed.response.strip()
    if name in data.columns:
        col = data[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DesignError(f"response {name!r} is not numeric (dtype {col.dtype})")
        y = col.to_numpy(dtype=float)
    else:
        try:
            lhs = model_matrix(f"{name} ~ 1", data, na_action="ignore").lhs
        except Exception as exc:  # formulaic raises many types
            raise DesignError(f"cannot evaluate the response {name!r}: {exc}") from None
        if lhs.shape[1] != 1:
            raise DesignError(f"response {name!r} is not numeric (it encodes to "
                              f"{lhs.shape[1]} columns)")
        y = np.asarray(lhs, dtype=float).ravel()
    _check_finite(y, name, "response", data.index)
    return y


def _check_finite(values: np.ndarray, name: str, role: str, index: pd.Index) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        rows = list(index[np.flatnonzero(bad.reshape(len(index), -1).any(axis=1))[:5]])
        raise DesignError(f"{role} {name!r} has non-finite values (NaN or inf) in rows {rows}")


def _fixed_matrix(parsed: ParsedFormula, data: pd.DataFrame) -> tuple[np.ndarray, object]:
    simple = _simple_spec(parsed.fixed, data)
    if simple is not None:
        X = simple.get_model_matrix(data)
        for j, col in enumerate(simple.column_names):
            _check_finite(X[:, j], col, "fixed-effect column", data.index)
        return X, simple
    try:
        mm = model_matrix(parsed.fixed, data, na_action="ignore")
    except Exception as exc:
        raise DesignError(f"cannot build the fixed-effects matrix for {parsed.fixed!r}: "
                          f"{exc}") from None
    X = np.asarray(mm, dtype=float).reshape(len(data), -1)
    for j, col in enumerate(mm.columns):
        _check_finite(X[:, j], str(col), "fixed-effect column", data.index)
    return X, mm.model_spec


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


def _fixed_terms(spec: object, kept_idx: np.ndarray) -> tuple[FixedTerm, ...]:
    pos = {int(c): i for i, c in enumerate(kept_idx)}
    out = []
    for term, sl in spec.term_slices.items():
        cols = tuple(pos[c] for c in range(sl.start, sl.stop) if c in pos)
        variables = tuple(str(f) for f in term.factors if str(f) != "1")
        name = "(Intercept)" if not variables else str(term)
        out.append(FixedTerm(name=name, variables=variables, columns=cols))
    return tuple(out)


def _random_block(term: RandomTermSpec, data: pd.DataFrame) -> RandomBlock:
    # levels ordered by each factor's own order: categories as given, numbers
    # numerically, strings sorted; an interaction varies its first factor slowest
    keys = np.column_stack([
        pd.Categorical(data[f]).remove_unused_categories().codes.astype(np.int64)
        for f in term.factors])
    uniq, codes = np.unique(keys, axis=0, return_inverse=True)
    codes = codes.ravel().astype(np.intp)
    first = np.empty(len(uniq), dtype=np.intp)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    levels = pd.Index(group_labels(data.iloc[first], term.factors), dtype=object,
                      name=term.group)
    if len(levels) < 2:
        raise DesignError(
            f"grouping factor {term.group!r} of {term.source} has only one level "
            f"({levels[0]!r}); a random effect needs at least two")
    spec = _simple_spec(term.expr, data)
    if spec is not None:
        zraw, names = spec.get_model_matrix(data), spec.column_names
    else:
        try:
            mm = model_matrix(term.expr, data, na_action="ignore")
        except Exception as exc:
            raise DesignError(f"cannot build the model matrix of random term {term.source}: "
                              f"{exc}") from None
        zraw, names, spec = np.asarray(mm, dtype=float), list(mm.columns), mm.model_spec
    zraw = zraw.reshape(len(data), -1)
    if zraw.shape[1] == 0:
        raise DesignError(f"random term {term.source} has no columns")
    columns = tuple("(Intercept)" if c == "Intercept" else str(c) for c in names)
    for j, c in enumerate(columns):
        _check_finite(zraw[:, j], c, f"column of random term {term.source}", data.index)
    return RandomBlock(group=term.group, factors=term.factors, expr=term.expr,
                       source=term.source, columns=columns, levels=levels, codes=codes,
                       zraw=np.ascontiguousarray(zraw), spec=spec)


def _check_identifiable(blocks: list[RandomBlock], n: int) -> None:
    for b in blocks:
        if b.nlev >= n:
            raise DesignError(
                f"grouping factor {b.group!r} has {b.nlev} levels for {n} observations; "
                "the number of levels must be less than the number of observations")
        if b.nlev * b.q >= n:
            raise DesignError(
                f"random term {b.source} has {b.nlev * b.q} random effects "
                f"({b.nlev} levels x {b.q}) for {n} observations; the random-effects "
                "parameters and the residual variance would be unidentifiable")
