"""Residual covariance structures as the user writes them (nlme's semantics).

>>> import mixedanova as ma
>>> ma.AR1(group="Mare", order="time_index")          # corAR1(form = ~ time_index | Mare)
AR1(group='Mare', order='time_index')

Correlation structures (at most one per model):

* :class:`AR1` -- ``corr = phi^|i - j|`` on integer positions within a group
  (``order`` column; gaps count, as nlme's ``corAR1(form = ~ order | group)``;
  without ``order`` the rows' order within the group, as ``corAR1(~ 1 | group)``);
* :class:`CAR1` -- ``corr = phi^|t - t'|`` on real times (``corCAR1``);
* :class:`CompSymm` -- equal correlation within a group (``corCompSymm``).

Variance functions (at most one): :class:`VarIdent` (one SD per level),
:class:`VarPower` (SD ``|v|^power``), :class:`VarExp` (SD ``exp(expon v)``).
Pass one structure or a tuple ``(correlation, variance function)`` as
``residual=`` to :func:`mixedanova.lmm`.

Visit covariances (mmrm's structures; ``time`` a visit factor or a number whose
sorted distinct values are the visits; a missing visit removes its row and
column of the visit covariance):

* :class:`Unstructured` -- a free ``m x m`` covariance (mmrm ``us``; ``by`` a
  column for one covariance per group, ``us(AVISIT | ARMCD / USUBJID)``);
* :class:`Toeplitz` -- correlation by lag (``toep``; ``heterogeneous=True``:
  ``toeph``);
* :class:`AR1H` -- AR(1) correlation with one SD per visit (``ar1h``);
* :class:`CSH` -- compound symmetry with one SD per visit (``csh``);
* :class:`AnteDependence` -- first-order ante-dependence (``ad``, ``adh``).

A formula with no random-effects term and one of these (or :class:`AR1` /
:class:`CompSymm`) is a marginal model (nlme's ``gls``, mmrm), fitted on
mmrm's parameters (see :mod:`mixedanova.likelihood.visit_cov`).

``group`` may name an interaction, ``"Dog:Side"`` or ``"day/subject"`` (both
mean the groups of the combined columns).  :func:`bind_residual` checks the data
and turns the specification into the engine's
:class:`~mixedanova.likelihood.residual.ResidualStructure`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from .errors import DesignError, MixedAnovaWarning
from .structured import StructuredTerm

if TYPE_CHECKING:  # the engine (scipy.sparse) is imported when a structure is bound
    from .likelihood.residual import ResidualStructure

__all__ = ["AR1", "CAR1", "CompSymm", "VarIdent", "VarPower", "VarExp",
           "Unstructured", "Toeplitz", "AR1H", "CSH", "AnteDependence",
           "ResidualWarning", "ResidualLevels", "residual_columns", "residual_parts",
           "group_columns", "group_labels", "reference_candidate", "bind_residual",
           "bind_marginal", "VisitLevels", "visit_levels"]


class ResidualWarning(MixedAnovaWarning):
    """A residual structure is fitted, but something about it deserves attention."""


def group_columns(group: str) -> tuple[str, ...]:
    """The columns of a residual ``group`` (``"Dog:Side"`` and ``"day/subject"``
    name two)."""
    cols = tuple(c.strip() for c in re.split(r"[:/]", str(group)) if c.strip())
    if not cols:
        raise DesignError(f"residual group {group!r} names no column")
    return cols


@dataclass(frozen=True)
class ResidualLevels:
    """What the whole data fix about a residual structure bound chunk by chunk
    (the partitions of a Dask data frame; see :func:`bind_residual`).

    Attributes
    ----------
    largest_group : int
        Rows of the largest correlation group (CompSymm's lower bound of ``rho``).
    variance_levels : tuple of str
        VarIdent's levels, reference first (empty for other structures).
    """

    largest_group: int = 0
    variance_levels: tuple[str, ...] = ()


@dataclass(frozen=True)
class AR1:
    """AR(1) correlation on integer positions within ``group`` (nlme's corAR1)."""

    group: str
    order: str | None = None

    def columns(self) -> tuple[str, ...]:
        return group_columns(self.group) + ((self.order,) if self.order else ())


@dataclass(frozen=True)
class CAR1:
    """Continuous-time AR(1): ``phi^|t - t'|`` within ``group`` (nlme's corCAR1)."""

    group: str
    time: str

    def columns(self) -> tuple[str, ...]:
        return group_columns(self.group) + (self.time,)


@dataclass(frozen=True)
class CompSymm:
    """Equal correlation ``rho`` within ``group`` (nlme's corCompSymm)."""

    group: str

    def columns(self) -> tuple[str, ...]:
        return group_columns(self.group)


@dataclass(frozen=True)
class VarIdent:
    """One residual SD per level of ``by`` (nlme's varIdent).

    ``reference`` is the level whose ratio is 1; by default nlme's: the level of
    the first row once the data are sorted by the outermost grouping factor
    (levels as strings) -- not necessarily the alphabetically first level.
    """

    by: str
    reference: str | None = None

    def columns(self) -> tuple[str, ...]:
        return (self.by,)


@dataclass(frozen=True)
class VarPower:
    """Residual SD ``sigma |v|^power`` for the covariate ``v`` (nlme's varPower)."""

    covariate: str

    def columns(self) -> tuple[str, ...]:
        return (self.covariate,)


@dataclass(frozen=True)
class VarExp:
    """Residual SD ``sigma exp(expon v)`` for the covariate ``v`` (nlme's varExp)."""

    covariate: str

    def columns(self) -> tuple[str, ...]:
        return (self.covariate,)


@dataclass(frozen=True)
class Unstructured:
    """Unstructured visit covariance within ``group`` (mmrm ``us(time | group)``;
    nlme ``corSymm`` + ``varIdent``); ``by``: one covariance per level of this
    column (constant within a group; mmrm ``us(time | by / group)``)."""

    group: str
    time: str
    by: str | None = None

    def columns(self) -> tuple[str, ...]:
        return group_columns(self.group) + (self.time,) + ((self.by,) if self.by else ())


@dataclass(frozen=True)
class Toeplitz:
    """Toeplitz (banded by lag) visit correlation (mmrm ``toep``; ``toeph`` with
    ``heterogeneous=True``: one SD per visit)."""

    group: str
    time: str
    heterogeneous: bool = False

    def columns(self) -> tuple[str, ...]:
        return group_columns(self.group) + (self.time,)


@dataclass(frozen=True)
class AR1H:
    """AR(1) correlation over visit positions, one SD per visit (mmrm ``ar1h``)."""

    group: str
    time: str

    def columns(self) -> tuple[str, ...]:
        return group_columns(self.group) + (self.time,)


@dataclass(frozen=True)
class CSH:
    """Compound symmetry with one SD per visit (mmrm ``csh``)."""

    group: str
    time: str

    def columns(self) -> tuple[str, ...]:
        return group_columns(self.group) + (self.time,)


@dataclass(frozen=True)
class AnteDependence:
    """First-order ante-dependence: ``corr(i, j) = prod_{k=i}^{j-1} rho_k`` (mmrm
    ``ad``; ``adh`` with ``heterogeneous=True``)."""

    group: str
    time: str
    heterogeneous: bool = False

    def columns(self) -> tuple[str, ...]:
        return group_columns(self.group) + (self.time,)


_VISIT = (Unstructured, Toeplitz, AR1H, CSH, AnteDependence, StructuredTerm)
_CORRELATIONS = (AR1, CAR1, CompSymm) + _VISIT
_VARIANCES = (VarIdent, VarPower, VarExp)


def _parts(residual) -> tuple[object | None, object | None]:
    """``(correlation, variance function)`` of the user's ``residual=``."""
    items = list(residual) if isinstance(residual, (tuple, list)) else [residual]
    cor = var = None
    for item in items:
        if isinstance(item, _CORRELATIONS):
            if cor is not None:
                raise DesignError(f"residual= takes one correlation structure, got {cor!r} "
                                  f"and {item!r}")
            cor = item
        elif isinstance(item, _VARIANCES):
            if var is not None:
                raise DesignError(f"residual= takes one variance function, got {var!r} "
                                  f"and {item!r}")
            var = item
        else:
            raise DesignError(
                f"residual= expects ma.AR1, ma.CAR1, ma.CompSymm, ma.Unstructured, ma.Toeplitz, "
                f"ma.AR1H, ma.CSH, ma.AnteDependence, ma.VarIdent, ma.VarPower or ma.VarExp "
                f"(or a tuple of one correlation and one variance function), not {item!r}")
    return cor, var


def residual_parts(residual) -> tuple[object | None, object | None]:
    """``(correlation, variance function)`` of a ``residual=`` specification
    (either may be None)."""
    return _parts(residual)


def residual_columns(residual) -> tuple[str, ...]:
    """Data columns a ``residual=`` specification needs."""
    if residual is None:
        return ()
    return tuple(dict.fromkeys(c for p in _parts(residual) if p is not None
                               for c in p.columns()))


def group_labels(data: pd.DataFrame, cols: tuple[str, ...]) -> np.ndarray:
    """Each row's group label, the columns' values as strings joined by ``:``."""
    out = None
    for c in cols:
        s = data[c].astype(str).to_numpy(dtype=object)
        out = s if out is None else out + ":" + s
    return out


def _numeric(data: pd.DataFrame, col: str, what: str) -> np.ndarray:
    s = data[col]
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        raise DesignError(f"{what} column {col!r} must be numeric (dtype {s.dtype})")
    return s.to_numpy(dtype=float)


def _bind_correlation(cor, data: pd.DataFrame, whole: ResidualLevels | None = None):
    from .likelihood.residual import CompoundSymmetry, SerialCorrelation

    cols = group_columns(cor.group)
    labels = group_labels(data, cols)
    _, groups = np.unique(labels, return_inverse=True)
    groups = groups.ravel().astype(np.intp)
    sizes = np.bincount(groups)
    name = type(cor).__name__
    largest = int(sizes.max()) if whole is None else whole.largest_group
    if largest < 2:
        raise DesignError(f"{name}: every group of {cor.group!r} has one observation, so "
                          "the residual correlation cannot be estimated")
    if isinstance(cor, CompSymm):
        return CompoundSymmetry(groups, largest=0 if whole is None else largest)
    if isinstance(cor, AR1):
        if cor.order is None:
            times = (pd.Series(groups).groupby(groups).cumcount().to_numpy()).astype(float)
        else:
            times = _numeric(data, cor.order, "AR1 order")
            if np.any(times != np.round(times)):
                raise DesignError(f"AR1 order column {cor.order!r} must hold integer positions "
                                  "(use CAR1 for real-valued times)")
        col = cor.order or "(row order)"
    else:
        times = _numeric(data, cor.time, "CAR1 time")
        col = cor.time
    key = pd.DataFrame({"g": groups, "t": times})
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DesignError(f"{name}: {col!r} has ties inside group {labels[i]!r} of "
                          f"{cor.group!r} (value {times[i]:g} occurs more than once); "
                          "positions within a group must be distinct")
    return SerialCorrelation(name, groups, times)


def _reference_level(data: pd.DataFrame, by: np.ndarray, groups: list[tuple[str, ...]]) -> str:
    """nlme's reference stratum: the first row once the data are sorted by the
    grouping factors, outermost first (levels as strings), then row order."""
    return reference_candidate(data, by, groups)[1]


def reference_candidate(data: pd.DataFrame, by: np.ndarray, groups: list[tuple[str, ...]]
                        ) -> tuple[tuple[str, ...], str]:
    """nlme's VarIdent reference among these rows: ``(key, level)`` of the first
    row once the rows are sorted by the grouping factors' labels (outermost first;
    ``key`` holds them), then by row order.  Over chunks of rows in data order the
    reference is the level of the smallest key, the earliest chunk's on ties."""
    keys = [np.arange(len(by))] + [group_labels(data, g) for g in reversed(groups) if g]
    first = 0 if len(keys) == 1 else int(np.lexsort(keys)[0])
    return tuple(str(k[first]) for k in reversed(keys[1:])), str(by[first])


def _bind_variance(var, data: pd.DataFrame, outer: list[tuple[str, ...]],
                   whole: ResidualLevels | None = None):
    from .likelihood.residual import VarianceFunction

    if isinstance(var, VarIdent) and whole is not None:  # levels of the whole data
        by = data[var.by].astype(str).to_numpy(dtype=object)
        order = list(whole.variance_levels)
        return VarianceFunction("VarIdent", pd.Index(order).get_indexer(by).astype(np.intp),
                                tuple(order))
    if isinstance(var, VarIdent):
        by = data[var.by].astype(str).to_numpy(dtype=object)
        levels = sorted(set(by))
        if len(levels) < 2:
            raise DesignError(f"VarIdent: {var.by!r} has one level ({levels[0]!r}); one "
                              "residual SD per level needs at least two")
        ref = var.reference if var.reference is not None else _reference_level(data, by, outer)
        ref = str(ref)
        if ref not in levels:
            raise DesignError(f"VarIdent: reference level {ref!r} is not a level of "
                              f"{var.by!r} ({', '.join(levels)})")
        order = [ref] + [lv for lv in levels if lv != ref]
        codes = pd.Index(order).get_indexer(by).astype(np.intp)
        return VarianceFunction("VarIdent", codes, tuple(order))
    v = _numeric(data, var.covariate, type(var).__name__ + " covariate")
    if isinstance(var, VarPower):
        if np.any(v == 0.0):
            rows = list(data.index[v == 0.0][:5])
            raise DesignError(f"VarPower: covariate {var.covariate!r} is 0 in rows {rows}; the "
                              "residual SD |v|^power would be 0 there (use VarExp, or shift "
                              "the covariate)")
        if np.any(v < 0.0) and whole is None:  # chunks: warned once from the whole data
            warnings.warn(f"VarPower: covariate {var.covariate!r} has negative values; the "
                          "residual SD uses |v|^power, as nlme's varPower", ResidualWarning,
                          stacklevel=4)
        return VarianceFunction("VarPower", v)
    return VarianceFunction("VarExp", v)


def _describe(part) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in vars(part).items() if v is not None)
    return f"{type(part).__name__}({fields})"


def bind_residual(residual, data: pd.DataFrame,
                  outer_group: tuple[str, ...] | None = None,
                  whole: ResidualLevels | None = None) -> ResidualStructure:
    """Check ``residual=`` against the rows used and build the engine's structure.

    Parameters
    ----------
    residual : structure or tuple of structures
    data : pandas.DataFrame
        The rows the design uses (``design.data``).
    outer_group : tuple of str, optional
        Columns of the outermost random-effects grouping factor (VarIdent's
        default reference level).
    whole : ResidualLevels, optional
        ``data`` is one chunk of the data (whole correlation groups): the checks and
        levels that need all rows come from ``whole`` instead of ``data``.

    Raises
    ------
    DesignError
        Unknown structure, two correlations, ties in an AR1/CAR1 position inside
        a group, every group of one observation, a non-numeric or zero covariate,
        a VarIdent factor with one level.
    """
    from .likelihood.residual import ResidualStructure

    cor, var = _parts(residual)
    if isinstance(cor, StructuredTerm):
        raise DesignError(f"{cor.source}: a structured random term must be the only random "
                          "term, so far")
    if isinstance(cor, _VISIT) and var is not None:
        raise DesignError(f"{type(cor).__name__} has its own visit SDs; it takes no variance "
                          f"function ({_describe(var)})")
    for p in (cor, var):
        if p is None:
            continue
        for c in p.columns():
            if c not in data.columns:
                raise DesignError(f"column {c!r} ({type(p).__name__}) is not in the data")
    outer = [outer_group or (), group_columns(cor.group) if cor is not None else ()]
    if isinstance(cor, _VISIT):
        from .likelihood.visit_correlation import VisitCorrelation

        v = _bind_visit(cor, data)
        return ResidualStructure(correlation=VisitCorrelation(
            v.cov, v.subject, v.visit, v.group, v.group_levels), labels=(_describe(cor),))
    return ResidualStructure(
        correlation=None if cor is None else _bind_correlation(cor, data, whole),
        variance=None if var is None else _bind_variance(var, data, outer, whole),
        labels=tuple(_describe(p) for p in (cor, var) if p is not None))


def _visit_positions(data: pd.DataFrame, col: str, integer_gaps: bool,
                     whole: "VisitLevels | None" = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Visit position of every row and the visit labels.

    A numeric column: its sorted distinct values (``integer_gaps``: every
    integer from the smallest to the largest, AR(1) positions as nlme's);
    otherwise the levels (a pandas Categorical's categories that occur, else
    the distinct values sorted as strings).  ``whole``: the visits of all the
    data (``data`` is one chunk of it).
    """
    s = data[col]
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    if numeric and integer_gaps:
        v = s.to_numpy(dtype=float)
        if np.any(v != np.round(v)):
            raise DesignError(f"AR1 order column {col!r} must hold integer positions")
        if whole is not None:
            return (v - int(whole.time[0])).astype(np.intp), whole.time
        lo, hi = int(v.min()), int(v.max())
        if hi - lo + 1 > 1000:
            raise DesignError(f"AR1 order column {col!r} spans {hi - lo + 1} positions; a "
                              "marginal model's visit covariance allows at most 1000")
        return (v - lo).astype(np.intp), tuple(str(i) for i in range(lo, hi + 1))
    if numeric:
        v = s.to_numpy(dtype=float)
        levels = np.unique(v) if whole is None else whole.values
        return np.searchsorted(levels, v).astype(np.intp), tuple(f"{x:g}" for x in levels)
    if whole is not None:
        levels = whole.time
    elif isinstance(s.dtype, pd.CategoricalDtype):
        present = set(s.astype(str))
        levels = tuple(str(c) for c in s.cat.categories if str(c) in present)
    else:
        levels = tuple(sorted(set(s.astype(str))))
    return pd.Index(levels).get_indexer(s.astype(str)).astype(np.intp), levels


@dataclass(frozen=True)
class VisitLevels:
    """What the whole data fix about a marginal model's visit structure bound chunk
    by chunk (the partitions of a Dask data frame, each holding whole subjects).

    Attributes
    ----------
    time : tuple of str
        The visit labels (position order).
    values : numpy.ndarray or None
        A numeric visit column's sorted distinct values.
    group_levels : tuple of str
        The covariance groups (``by``).
    """

    time: tuple[str, ...]
    values: np.ndarray | None = None
    group_levels: tuple[str, ...] = ("",)


def visit_levels(residual, times: pd.Series | None, bys: pd.Series | None,
                 largest: int) -> VisitLevels:
    """The :class:`VisitLevels` of the whole data from the distinct values of the
    visit column (``times``) and of ``by`` (``bys``) over all chunks and the rows
    of the largest subject (the visits of CompSymm and AR1 without ``order``)."""
    cor, _ = _parts(residual)
    by = getattr(cor, "by", None)
    groups = ("",)
    if by is not None and bys is not None:
        b = bys.astype(str)
        groups = tuple(sorted(set(b)))
        if isinstance(bys.dtype, pd.CategoricalDtype):
            groups = tuple(str(c) for c in bys.cat.categories if str(c) in set(b))
    if isinstance(cor, CompSymm) or (isinstance(cor, AR1) and cor.order is None):
        return VisitLevels(tuple(str(i + 1) for i in range(largest)), None, groups)
    col = cor.order if isinstance(cor, AR1) else cor.time
    frame = pd.DataFrame({col: times.reset_index(drop=True)})
    _, labels = _visit_positions(frame, col, integer_gaps=isinstance(cor, AR1))
    s = frame[col]
    values = None
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        values = np.unique(s.to_numpy(dtype=float))
    return VisitLevels(labels, values, groups)


def bind_marginal(residual, data: pd.DataFrame, whole: VisitLevels | None = None):
    """The marginal model's visit structure
    (:class:`~mixedanova.likelihood.visit_structure.VisitStructure`) on the rows used
    (``whole``: ``data`` is one chunk of the data, whole subjects; the visits and
    covariance groups are those of all the data).

    Raises
    ------
    DesignError
        A variance function or CAR1 (not available without random terms), a
        missing column, two rows of one group at the same visit, a ``by``
        column that varies inside a group.
    """
    from .likelihood.visit_structure import VisitStructure

    cor, var = _parts(residual)
    if var is not None or cor is None or isinstance(cor, CAR1):
        raise DesignError(
            "a formula without random-effects terms is a marginal model; its residual= must "
            "be one of ma.Unstructured, ma.Toeplitz, ma.AR1H, ma.CSH, ma.AnteDependence, "
            f"ma.AR1 or ma.CompSymm (no variance function or CAR1), not {residual!r}")
    v = _bind_visit(cor, data, whole)
    return VisitStructure(cov=v.cov, subject=v.subject, visit=v.visit, group=v.group,
                          group_levels=v.group_levels, labels=(_describe(cor),))


@dataclass(frozen=True)
class _VisitBinding:
    """A visit structure checked against the data: per row the subject code,
    visit position and covariance group; the visit covariance."""

    cov: object
    subject: np.ndarray
    visit: np.ndarray
    group: np.ndarray
    group_levels: tuple[str, ...]


def _bind_visit(cor, data: pd.DataFrame, whole: VisitLevels | None = None) -> _VisitBinding:
    """Subject code, visit position and covariance group of every row, and the
    :class:`~mixedanova.likelihood.visit_cov.VisitCovariance` (checked)."""
    from .likelihood.visit_cov import VisitCovariance

    for c in cor.columns():
        if c not in data.columns:
            raise DesignError(f"column {c!r} ({type(cor).__name__}) is not in the data")
    cols = group_columns(cor.group)
    labels = group_labels(data, cols)
    subj_levels, subject = np.unique(labels, return_inverse=True)
    subject = subject.ravel().astype(np.intp)
    if isinstance(cor, CompSymm):
        visit = pd.Series(subject).groupby(subject).cumcount().to_numpy().astype(np.intp)
        levels = tuple(str(i + 1) for i in range(int(visit.max()) + 1)) if whole is None \
            else whole.time
        kind, tcol = "cs", "(row order)"
    elif isinstance(cor, AR1):
        if cor.order is None:
            visit = pd.Series(subject).groupby(subject).cumcount().to_numpy().astype(np.intp)
            levels = tuple(str(i + 1) for i in range(int(visit.max()) + 1)) if whole is None \
                else whole.time
        else:
            visit, levels = _visit_positions(data, cor.order, integer_gaps=True, whole=whole)
        kind, tcol = "ar1", cor.order or "(row order)"
    elif isinstance(cor, StructuredTerm):  # glmmTMB's ar1/cs/toep/diag(0 + f | g) + residual
        visit, levels = _visit_positions(data, cor.time, integer_gaps=False, whole=whole)
        tcol = cor.time
        kind = {"ar1": "ar1", "cs": "csh", "toep": "toeph", "diag": "diag"}[cor.kind]
    else:
        visit, levels = _visit_positions(data, cor.time, integer_gaps=False, whole=whole)
        tcol = cor.time
        kind = {Unstructured: "us", AR1H: "ar1h", CSH: "csh"}.get(type(cor))
        if kind is None:
            base = "toep" if isinstance(cor, Toeplitz) else "ad"
            kind = base + ("h" if cor.heterogeneous else "")
    if len(levels) < 2:
        raise DesignError(f"{type(cor).__name__}: {tcol!r} has one visit; a visit covariance "
                          "needs at least two")
    key = pd.DataFrame({"g": subject, "t": visit})
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DesignError(f"{type(cor).__name__}: group {labels[i]!r} of {cor.group!r} has "
                          f"more than one row at visit {levels[visit[i]]!r} of {tcol!r}; "
                          "each group has at most one row per visit")
    group, group_levels = np.zeros(len(subject), dtype=np.intp), ("",)
    by = getattr(cor, "by", None)
    if by is not None:
        b = data[by].astype(str).to_numpy(dtype=object)
        group_levels = tuple(sorted(set(b)))
        if isinstance(data[by].dtype, pd.CategoricalDtype):  # the factor's own level order
            group_levels = tuple(str(c) for c in data[by].cat.categories if str(c) in set(b))
        if whole is not None:
            group_levels = whole.group_levels
        group = pd.Index(group_levels).get_indexer(b).astype(np.intp)
        first = np.full(len(subj_levels), -1, dtype=np.intp)
        first[subject] = group
        if np.any(first[subject] != group):
            i = int(np.flatnonzero(first[subject] != group)[0])
            raise DesignError(f"Unstructured: by column {by!r} varies inside group "
                              f"{labels[i]!r} of {cor.group!r}; it must be constant per group")
    return _VisitBinding(VisitCovariance(kind, levels, nugget=isinstance(cor, StructuredTerm)),
                         subject, visit, group, group_levels)
