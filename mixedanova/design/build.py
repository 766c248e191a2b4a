"""Model matrices for a linear mixed model.

:func:`build_design` turns a DataFrame and a parsed lme4 formula into a
:class:`Design`: the response ``y``, the fixed-effects matrix ``X`` (formulaic's
column names), and one :class:`RandomBlock` per random-effects term holding the
grouping factor (levels and integer codes), the term's own model matrix
(``zraw``, one row per observation) and the formulaic spec needed to rebuild it
for new data.  ``Z`` itself is never stored densely: the column of observation
``i`` for term ``k`` is ``codes[i] * q + j`` with value ``zraw[i, j]``.

The model matrices of the formula's parts come from
:mod:`mixedanova.term_matrices`; the checks of the data (missing and non-finite
values, column kinds) from :mod:`mixedanova.data_checks`.

Prior weights (``weights=``) and the offset (``offset(expr)`` terms of the
formula plus ``offset=``) are stored as per-row vectors (``Design.weights``,
``Design.offset``); the model whitens the rows with them before the likelihood
sees them (:meth:`mixedanova.model.LinearMixedModel.deviance_function`).

Rows with a missing value in any used column are dropped and counted
(lme4's ``na.action = na.omit``).  Infinite values, a non-numeric response,
a grouping factor with one level and similar problems raise
:class:`DesignError` naming the column, term or level at fault.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import matrices as _matrices
from .theta import ThetaLayout
from .variables import VariableCodes, row_codes, variable_codes
from .formula import ParsedFormula, RandomTermSpec, formula_variables, strip_quotes
from .restricted import check_restricted
from .data_checks import (check_columns, check_finite, complete_rows, foreign_detail,
                          missing_column_error, plain_strings, text_number_hint)
from ..errors import DesignError, RankDeficiencyWarning, user_stacklevel
from .term_matrices import (FixedTerm, as_float, fixed_terms, independent_columns,
                            model_matrix_like, term_matrix)

__all__ = ["DesignError", "RandomBlock", "BlockViews", "FixedTerm", "Design", "build_design", "group_labels",
           "RankDeficiencyWarning"]

_WEIGHTS_ARRAY = "(weights)"  # data column holding weights given as an array
_OFFSET_ARRAY = "(offset)"    # data column holding an offset given as an array


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
    structure : str
        Covariance structure of the term (``"us"``, ``"diag"``, ``"cs"``, ``"ar1"``,
        ``"toep"``; :mod:`mixedanova.design.covstruct`).
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
    structure: str = "us"

    @property
    def q(self) -> int:
        """Number of columns per level."""
        return self.zraw.shape[1]

    @property
    def nlev(self) -> int:
        """Number of levels."""
        return len(self.levels)

    @property
    def lhs_variables(self) -> list[str]:
        """Data columns of the term's left-hand side (none for ``(1|g)``)."""
        return _formula_variables(self.expr)

    @property
    def variables(self) -> list[str]:
        """Data columns the term needs: those of its left-hand side, then its factors."""
        return list(dict.fromkeys(_formula_variables(self.expr) + list(self.factors)))

    def term_matrix(self, data: pd.DataFrame) -> np.ndarray:
        """``zraw`` (the left-hand side's columns) for new data."""
        return np.asarray(self.spec.get_model_matrix(data), dtype=float).reshape(len(data), -1)

    def rebuild(self, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Codes (``-1`` for unseen levels) and ``zraw`` for new data."""
        labels = group_labels(data, self.factors)
        codes = self.levels.get_indexer(labels)
        zraw = model_matrix_like(self.spec, data, f"random term {self.source}")
        return codes, zraw.reshape(len(data), -1)


class BlockViews:
    """What a design's random-effects blocks say by themselves (``self.blocks``):
    shared by :class:`Design` and the chunked design summary."""

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
    def structured(self) -> bool:
        """Some random term has a covariance structure other than ``us``
        (:meth:`mixedanova.design.covstruct.CovarianceParameters.for_design`)."""
        return any(b.structure != "us" for b in self.blocks)

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


@dataclass(frozen=True)
class Design(BlockViews):
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
    weights: np.ndarray | None = field(repr=False, default=None)
    offset: np.ndarray | None = field(repr=False, default=None)
    weights_column: str | None = None
    offset_column: str | None = None

    @property
    def has_weights(self) -> bool:
        """True when prior weights were given (lme4's ``weights =``)."""
        return self.weights is not None

    @property
    def prior_weights(self) -> np.ndarray:
        """Prior weights of the rows used (ones without ``weights=``)."""
        return np.ones(self.nobs) if self.weights is None else self.weights

    @property
    def offset_values(self) -> np.ndarray:
        """Total offset of the rows used (zeros without an offset)."""
        return np.zeros(self.nobs) if self.offset is None else self.offset

    def offset_for(self, data: pd.DataFrame) -> np.ndarray:
        """The offset of new rows: the formula's ``offset()`` terms and the ``offset=``
        column, evaluated on ``data`` (zeros when the model has no offset).

        Raises
        ------
        DesignError
            When the fit's ``offset=`` was an array (it cannot be rebuilt for new rows).
        """
        total = np.zeros(len(data))
        if self.offset is None:
            return total
        for expr in self.formula.offsets:
            total = total + _offset_values(expr, data)
        if self.offset_column == _OFFSET_ARRAY:
            raise DesignError(
                "the model's offset= was given as an array, which cannot be evaluated on "
                "new data; refit with offset='column' or offset(column) in the formula")
        if self.offset_column is not None:
            total = total + _offset_values(self.offset_column, data)
        return total

    @property
    def nobs(self) -> int:
        """Number of observations used."""
        return len(self.y)

    @property
    def p(self) -> int:
        """Number of fixed-effect columns."""
        return self.X.shape[1]


    def variable(self, name: str) -> VariableCodes:
        """Data column ``name`` over the rows used, as level codes (and numbers when
        numeric): the method of moments' view of a variable
        (:mod:`mixedanova.design.variables`).

        Raises
        ------
        DesignError
            ``name`` is not a column the design kept.
        """
        if self.data is None or name not in self.data.columns:
            raise DesignError(f"variable {name!r} is not a column of the model's data")
        return variable_codes(self.data[name], name)

    def needed_columns(self, include_random: bool = True) -> list[str]:
        """Data columns needed to rebuild X and the offset (and Z when ``include_random``)."""
        cols = list(self.data.columns)
        needed = formula_variables(self.formula.fixed, cols)
        for expr in self.formula.offsets:
            needed += [v for v in formula_variables(expr, cols) if v not in needed]
        if self.offset_column not in (None, _OFFSET_ARRAY):
            needed.append(self.offset_column)
        if include_random:
            for b in self.blocks:
                needed += formula_variables(b.expr, cols) + list(b.factors)
        return list(dict.fromkeys(v for v in needed if v in set(cols)))

    def fixed_matrix(self, data: pd.DataFrame) -> np.ndarray:
        """Rebuild ``X`` (kept columns only) for new data.

        Raises
        ------
        DesignError
            A level of a fixed factor not seen in the fit, or a column of the
            wrong kind (text where the fit had numbers).
        """
        return model_matrix_like(self.fixed_spec, data, "fixed effects")[:, self.kept_columns]

    # ------------------------------------------- the matrices on show (issue 13)
    def X_frame(self) -> pd.DataFrame:
        """``X`` labelled: formulaic's column names, the data's row labels."""
        return _matrices.x_frame(self)

    @property
    def Z(self) -> pd.DataFrame:
        """``Z`` kept sparse (``Sparse[float64]`` columns) with labelled rows and columns.

        Columns in lme4's order (``getME(m, "Z")``), labelled ``group[level]`` or
        ``group[level]:column``; ``Z.sparse.to_coo()`` gives the SciPy matrix.
        """
        return _matrices.z_frame(self)

    def Z_sparse(self):
        """``Z`` as a SciPy sparse matrix (columns as :attr:`Z`)."""
        return _matrices.z_sparse(self)

    def Z_dense(self, max_cells: int | None = None) -> pd.DataFrame:
        """``Z`` as a dense labelled DataFrame; refused above ``max_cells`` entries
        (default 4e6) with a :class:`DesignError`."""
        return _matrices.z_dense(self, max_cells)

    @property
    def z_names(self) -> list[str]:
        """Labels of the columns of ``Z`` (and of the random-effects vector ``b``)."""
        return _matrices.z_names(self)

    def describe(self) -> pd.DataFrame:
        """The terms: fixed ones with their columns of ``X``, random ones with their
        grouping factor's number of levels and (first ten) levels."""
        return _matrices.describe(self)


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
                 missing: str = "drop", weights=None, offset=None,
                 extra_columns: tuple[str, ...] = (), marginal: bool = False,
                 fixed_sigma: bool = False, check_levels: bool = True) -> Design:
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
    weights : str or array, optional
        Prior weights (lme4's ``weights =``): a column name or one positive value
        per row of ``data``.  Row ``i`` has residual variance ``sigma^2 / w_i``.
    offset : str or array, optional
        A known term added to the linear predictor (lme4's ``offset =``), in
        addition to any ``offset(expr)`` terms of the formula.
    extra_columns : tuple of str
        Further columns the model needs (a residual structure's group, time or
        covariate): kept in ``Design.data`` and part of the missing-value rule.
    marginal : bool
        Accept a formula without random-effects terms (a marginal model whose
        residual structure carries the correlation; ``residual=`` of :func:`mixedanova.lmm`).
    fixed_sigma : bool
        The residual scale or another parameter is held fixed (``fixed=``): as
        many random effects as observations can then be identifiable (a meta-analysis).
    check_levels : bool
        Refuse a grouping factor with as many levels (or random effects) as
        observations (a linear model's identifiability check; a GLMM, whose
        scale is fixed, allows an observation-level random effect).

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
    if not parsed.random and not marginal:
        raise DesignError(
            f"formula {parsed.formula!r} has no random-effects term such as (1 | group); "
            "a linear mixed model needs at least one")
    if len(data) == 0:
        raise DesignError("data has no rows")
    data, weights_column = _attach(data, weights, "weights", _WEIGHTS_ARRAY)
    data, offset_column = _attach(data, offset, "offset", _OFFSET_ARRAY)
    if parsed.restricted:  # every name a column of the data, before anything is evaluated
        check_restricted(parsed.formula, columns=data.columns)
    used = _used_columns(parsed, data)
    for col in extra_columns:
        if col not in data.columns:
            raise missing_column_error(col, data, "residual structure")
        if col not in used:
            used.append(col)
    for extra in (weights_column, offset_column):
        if extra is not None and extra not in used:
            used.append(extra)
    check_columns(parsed, data, used)
    data, n_dropped = complete_rows(data, used, missing)
    data = plain_strings(data)
    y = _response(parsed, data)
    w = None
    if weights_column is not None:
        w = _numeric_column(data, weights_column, "weights")
        bad = ~(w > 0)
        if bad.any():
            rows = list(data.index[bad][:5])
            raise DesignError(f"weights {_label(weights_column)} must be positive; rows "
                              f"{rows} have {', '.join(f'{v:g}' for v in w[bad][:5])}")
    off = None
    if parsed.offsets or offset_column is not None:
        off = np.zeros(len(data))
        for expr in parsed.offsets:
            off = off + _offset_values(expr, data)
        if offset_column is not None:
            off = off + _numeric_column(data, offset_column, "offset")
    X_all, columns, spec = term_matrix(
        parsed.fixed, data, f"the fixed-effects matrix for {parsed.fixed!r}")
    for j, col in enumerate(columns):
        check_finite(X_all[:, j], col, "fixed-effect column", data.index)
    names_all = list(spec.column_names)
    keep = independent_columns(X_all)
    dropped = tuple(n for n, k in zip(names_all, keep) if not k)
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
            RankDeficiencyWarning, stacklevel=user_stacklevel())
    kept_idx = np.flatnonzero(keep)
    if len(kept_idx) >= len(y):
        raise DesignError(
            f"the fixed effects {parsed.fixed!r} have {len(kept_idx)} independent columns "
            f"for {len(y)} observations; a mixed model needs fewer fixed-effect columns "
            "than observations")
    X = np.ascontiguousarray(X_all[:, kept_idx])
    blocks = [_random_block(term, data) for term in parsed.random]
    order = sorted(range(len(blocks)), key=lambda k: -blocks[k].nlev)  # stable, as lme4
    blocks = [blocks[k] for k in order]
    if check_levels and not fixed_sigma:
        _check_identifiable(blocks, len(y))
    return Design(formula=parsed, y=y, X=X, x_names=tuple(names_all[i] for i in kept_idx),
                  blocks=tuple(blocks), fixed_terms=fixed_terms(spec, kept_idx), fixed_spec=spec,
                  kept_columns=kept_idx, row_index=data.index, n_dropped=n_dropped,
                  dropped_columns=dropped, data=data, weights=w, offset=off,
                  weights_column=weights_column, offset_column=offset_column)


def _label(column: str) -> str:
    return "(the array given)" if column in (_WEIGHTS_ARRAY, _OFFSET_ARRAY) else repr(column)


def _attach(data: pd.DataFrame, value, role: str,
            array_column: str) -> tuple[pd.DataFrame, str | None]:
    """Weights/offset given as a column name, or as an array stored as a new column."""
    if value is None:
        return data, None
    if isinstance(value, str):
        if value not in data.columns:
            raise missing_column_error(value, data, role)
        return data, value
    arr = np.asarray(value)
    if arr.ndim != 1 or len(arr) != len(data):
        raise DesignError(f"{role} must be a column name or one value per row of data "
                          f"({len(data)}), not an array of shape {arr.shape}")
    try:
        arr = arr.astype(float)
    except (TypeError, ValueError):
        raise DesignError(f"{role} must be numeric") from None
    return data.assign(**{array_column: arr}), array_column


def _numeric_column(data: pd.DataFrame, column: str, role: str) -> np.ndarray:
    col = data[column]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise DesignError(f"{role} column {column!r} is not numeric (dtype {col.dtype})")
    return col.to_numpy(dtype=float)


def _offset_values(expr: str, data: pd.DataFrame) -> np.ndarray:
    """Values of an offset expression (a column name or a formulaic expression)."""
    if expr in data.columns:
        return _numeric_column(data, expr, "offset")
    from formulaic import model_matrix

    try:
        mm = model_matrix(f"0 + {expr}", data, na_action="ignore")
    except Exception as exc:  # formulaic raises many types
        raise DesignError(f"cannot evaluate offset({expr}): {foreign_detail(exc)}") from None
    vals = as_float(mm, f"offset({expr})")
    if vals.ndim != 2 or vals.shape[1] != 1:
        raise DesignError(f"offset({expr}) must be one numeric value per row")
    vals = vals.ravel()
    check_finite(vals, f"offset({expr})", "offset", data.index)
    return vals


def _used_columns(parsed: ParsedFormula, data: pd.DataFrame) -> list[str]:
    used: list[str] = []

    def add(name: str, role: str) -> None:
        if name not in data.columns:
            raise missing_column_error(name, data, role)
        if name not in used:
            used.append(name)

    cols = list(data.columns)
    for v in _formula_variables(parsed.response, cols):
        if v in data.columns or not _is_module(v):
            add(v, "response")
    for v in _formula_variables(parsed.fixed, cols):
        if v in data.columns or not _is_module(v):
            add(v, "fixed effects")
    for expr in parsed.offsets:
        for v in _formula_variables(expr):
            if v in data.columns or not _is_module(v):
                add(v, f"offset({expr})")
    for term in parsed.random:
        for v in _formula_variables(term.expr, cols):
            if v in data.columns or not _is_module(v):
                add(v, f"random term {term.source}")
        for v in term.factors:
            add(v, f"grouping factor of {term.source}")
    return used


def _formula_variables(expr: str, columns=()) -> list[str]:
    """Data variables a formula needs (a new list each call)."""
    return formula_variables(expr, columns)


def _is_module(name: str) -> bool:
    return name in ("np", "numpy", "pd", "math")


def _response(parsed: ParsedFormula, data: pd.DataFrame) -> np.ndarray:
    from formulaic import model_matrix
    name = parsed.response.strip()
    if re.match(r"cbind\s*\(", name):
        raise DesignError(f"the response {name!r} has two columns (successes, failures): that "
                          "is a binomial GLMM (ma.glmm, not yet available); lmm fits one "
                          "numeric response")
    if strip_quotes(name) in data.columns:
        name = strip_quotes(name)
    if name in data.columns:
        col = data[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DesignError(f"response {name!r} is not numeric (dtype {col.dtype})"
                              + text_number_hint(col))
        y = col.to_numpy(dtype=float)
    else:
        try:
            lhs = model_matrix(f"{name} ~ 1", data, na_action="ignore").lhs
        except Exception as exc:  # formulaic raises many types
            raise DesignError(f"cannot evaluate the response {name!r}: "
                              f"{foreign_detail(exc)}") from None
        if lhs.shape[1] != 1:
            raise DesignError(f"response {name!r} is not numeric (it encodes to "
                              f"{lhs.shape[1]} columns)")
        y = as_float(lhs, f"the response {name!r}").ravel()
    check_finite(y, name, "response", data.index)
    return y


def _random_block(term: RandomTermSpec, data: pd.DataFrame) -> RandomBlock:
    # levels ordered by each factor's own order: categories as given, numbers
    # numerically, strings sorted; an interaction varies its first factor slowest
    keys = np.column_stack([
        pd.Categorical(data[f]).remove_unused_categories().codes.astype(np.int64)
        for f in term.factors])
    nuniq, codes = row_codes(keys)
    first = np.empty(nuniq, dtype=np.intp)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    levels = pd.Index(group_labels(data.iloc[first], term.factors), dtype=object,
                      name=term.group)
    if not levels.is_unique:
        dup = levels[levels.duplicated()][0]
        raise DesignError(
            f"grouping factor {term.group!r} of {term.source} has two different levels both "
            f"labelled {dup!r} (a value of {', '.join(map(repr, term.factors))} contains "
            "':'); recode the values")
    if len(levels) < 2:
        raise DesignError(
            f"grouping factor {term.group!r} of {term.source} has only one level "
            f"({levels[0]!r}); a random effect needs at least two")
    zraw, names, spec = term_matrix(term.expr, data,
                                    f"the model matrix of random term {term.source}")
    zraw = zraw.reshape(len(data), -1)
    if zraw.shape[1] == 0:
        raise DesignError(f"random term {term.source} has no columns")
    columns = tuple("(Intercept)" if c == "Intercept" else str(c) for c in names)
    for j, c in enumerate(columns):
        check_finite(zraw[:, j], c, f"column of random term {term.source}", data.index)
    return RandomBlock(group=term.group, factors=term.factors, expr=term.expr,
                       source=term.source, columns=columns, levels=levels, codes=codes,
                       zraw=np.ascontiguousarray(zraw), spec=spec, structure=term.structure)


def _check_identifiable(blocks: list[RandomBlock], n: int) -> None:
    for b in blocks:
        if b.nlev >= n:
            raise DesignError(
                f"grouping factor {b.group!r} has {b.nlev} levels for {n} observations; "
                "the number of levels must be less than the number of observations")
        if b.nlev * b.q >= n and b.structure in ("us", "diag"):  # ar1/cs/toep: few params
            raise DesignError(
                f"random term {b.source} has {b.nlev * b.q} random effects "
                f"({b.nlev} levels x {b.q}) for {n} observations; the random-effects "
                "parameters and the residual variance would be unidentifiable")


# The per-row pieces of build_design under public names, for the chunked encoder
# (design/chunked.py), which applies them to one chunk of rows at a time.
used_columns = _used_columns
response_values = _response
offset_values = _offset_values
