"""Marginal models with a visit covariance (nlme's ``gls``, mmrm) on a Dask data frame.

``ma.lmm("y ~ x + arm", ddf, residual=ma.Unstructured(group="USUBJID", time="AVISIT"))``
(no random-effects term; also ``ma.Toeplitz``, ``ma.AR1H``, ``ma.CSH``,
``ma.AnteDependence``, ``ma.AR1``, ``ma.CompSymm`` and glmmTMB's ``us(AVISIT | USUBJID)``)
runs

1. the codebook pass of every Dask fit (:mod:`mixedanova.distributed.dask_fit`);
2. :func:`marginal_summary_pass`: the subjects of each partition (a subject met in
   two partitions makes the frame *misaligned*, refused with
   :func:`~mixedanova.distributed.dask_residual.alignment_error`), the distinct
   visits and ``by`` levels, the largest subject, the unweighted ``X'X`` (the rank
   rule), ``X'y`` (a shift of the response, below) and ``sum(log w)``;
3. :func:`marginal_sums_pass`: each partition binds the visit structure to its rows
   with the whole data's visits (:func:`~mixedanova.residual.bind_marginal`) and
   returns per visit pattern the sums of its subjects' ``[X y]`` outer products
   (:class:`~mixedanova.likelihood.marginal_sums.MarginalSums`), summed in a tree;
4. the in-memory optimizer (:func:`~mixedanova.likelihood.visit_structure.marginal_state`)
   on :class:`~mixedanova.likelihood.marginal_sums.SummedMarginalCriterion` in the
   client: no more passes.  Satterthwaite and Kenward-Roger read the same sums.

The response enters the sums as ``y - X s``, ``s`` the least-squares fit of pass 2,
so that the sums hold residual-sized numbers whatever the response's location
(``beta = beta~ + s`` afterwards; residuals do not change).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from ..design.chunked import ChunkEncoder, ChunkPlan, aliased_columns
from ..design.formula import parse_formula
from ..errors import DesignError, FitError
from ..likelihood.control import check_control
from ..likelihood.marginal_sums import (MarginalSums, SummedMarginalCriterion,
                                        SummedMarginalData, rough_start)
from ..residual import (AR1, CAR1, CompSymm, VisitLevels, bind_marginal, group_columns,
                        group_labels, residual_columns, residual_parts, visit_levels)
from .dask_fit import DistributedModel, check_keywords, warn_fit
from .dask_residual import DistributedResidualResults, alignment_error, check_residual_method
from .passes import run_pass, summary_pass

__all__ = ["MarginalSummary", "MarginalBook", "DistributedMarginalModel",
           "DistributedMarginalResults", "marginal_summary_pass", "marginal_sums_pass",
           "lmm_dask_marginal"]

_SPLIT_SHOWN = 5


def _time_column(cor) -> str | None:
    if isinstance(cor, CompSymm) or (isinstance(cor, AR1) and cor.order is None):
        return None
    return cor.order if isinstance(cor, AR1) else cor.time


def _union(a: pd.Series | None, b: pd.Series | None) -> pd.Series | None:
    if a is None or b is None:
        return a if b is None else b
    return pd.concat([a, b], ignore_index=True).drop_duplicates(ignore_index=True)


@dataclass(frozen=True)
class MarginalSummary:
    """The summary pass's result (level-sized; ``a + b`` with ``a`` the earlier
    partitions).

    Attributes
    ----------
    subjects : pandas.Index
        Subjects (correlation groups) seen.
    split : tuple of str
        Subjects found in more than one partition (the first few).
    largest : int
        Rows of the largest subject.
    times, bys : pandas.Series or None
        Distinct values of the visit column and of ``by``.
    xx, xy : numpy.ndarray
        Unweighted ``X'X`` and ``X'(y - offset)`` (all of formulaic's columns).
    log_w : float
        ``sum(log w)`` of the prior weights (0 without).
    """

    subjects: pd.Index
    split: tuple[str, ...]
    largest: int
    times: pd.Series | None
    bys: pd.Series | None
    xx: np.ndarray
    xy: np.ndarray
    log_w: float

    def __add__(self, other: "MarginalSummary") -> "MarginalSummary":
        both = self.subjects.intersection(other.subjects)
        split = self.split + other.split + tuple(map(str, both[:_SPLIT_SHOWN]))
        return MarginalSummary(self.subjects.union(other.subjects), split[:_SPLIT_SHOWN],
                               max(self.largest, other.largest),
                               _union(self.times, other.times), _union(self.bys, other.bys),
                               self.xx + other.xx, self.xy + other.xy,
                               self.log_w + other.log_w)


@dataclass(frozen=True)
class MarginalBook:
    """What every partition needs for its sums: the user's ``residual=``, the whole
    data's visits, the kept fixed-effect columns and the response's shift ``s``."""

    residual: object
    levels: VisitLevels
    keep: np.ndarray
    shift: np.ndarray


def _summarize(encoder: ChunkEncoder, residual, chunk: pd.DataFrame) -> MarginalSummary | None:
    e = encoder.encode(chunk)
    if e is None:
        return None
    data = encoder.plan.complete(chunk)[0]
    cor, _ = residual_parts(residual)
    labels = group_labels(data, group_columns(cor.group))
    codes, uniq = pd.factorize(pd.Index(labels, dtype=object), sort=False)
    tcol, by = _time_column(cor), getattr(cor, "by", None)
    y = e.y if e.offset is None else e.y - e.offset
    log_w = float(np.sum(np.log(e.weights))) if e.weights is not None else 0.0
    return MarginalSummary(
        pd.Index(uniq, dtype=object), (), int(np.bincount(codes).max()),
        None if tcol is None else data[tcol].drop_duplicates(ignore_index=True),
        None if by is None else data[by].drop_duplicates(ignore_index=True),
        e.X.T @ e.X, e.X.T @ y, log_w)


def marginal_summary_pass(encoder: ChunkEncoder, residual, ddf,
                          progress: bool = False) -> MarginalSummary:
    """The summed :class:`MarginalSummary` of all partitions."""
    from dask import delayed

    enc = delayed(encoder, pure=True, traverse=False)
    res = delayed(residual, pure=True, traverse=False)
    return run_pass([delayed(_summarize, pure=True)(enc, res, part)
                     for part in ddf.to_delayed()], progress)


def _partition_sums(encoder: ChunkEncoder, book: MarginalBook,
                    chunk: pd.DataFrame) -> MarginalSums | None:
    from ..likelihood.threads import one_blas_thread

    e = encoder.encode(chunk)
    if e is None:
        return None
    data = encoder.plan.complete(chunk)[0]
    st = bind_marginal(book.residual, data, whole=book.levels)
    X = e.X[:, book.keep]
    y = e.y if e.offset is None else e.y - e.offset
    y = y - X @ book.shift
    if e.weights is not None:  # as design_rows: sqrt(w) on every row
        sw = np.sqrt(e.weights)
        X, y = sw[:, None] * X, sw * y
    with one_blas_thread():
        return MarginalSums.from_rows(X, y, st.subject, st.visit, st.cov.m, st.group,
                                      st.n_groups)


def marginal_sums_pass(encoder: ChunkEncoder, book: MarginalBook, ddf,
                       progress: bool = False) -> MarginalSums | None:
    """The summed :class:`~mixedanova.likelihood.marginal_sums.MarginalSums` of all
    partitions."""
    from dask import delayed

    enc = delayed(encoder, pure=True, traverse=False)
    bk = delayed(book, pure=True, traverse=False)
    return run_pass([delayed(_partition_sums, pure=True)(enc, bk, part)
                     for part in ddf.to_delayed()], progress)


class DistributedMarginalModel(DistributedModel):
    """A marginal model with a visit covariance on a Dask data frame (see the module
    docstring): holds the per-pattern sums, never the rows."""

    book: MarginalBook
    data: SummedMarginalData
    structure: object

    @classmethod
    def from_formula(cls, formula: str, ddf, *, residual=None, missing: str = "drop",
                     weights=None, offset=None, restricted: bool = False,
                     progress: bool = False) -> "DistributedMarginalModel":
        """Parse ``formula``, learn the codebook, check the subjects' alignment and
        sum the partitions' per-pattern outer products (three passes)."""
        parsed = parse_formula(formula, restricted=restricted)
        if parsed.restricted:
            from ..design.restricted import check_restricted
            check_restricted(parsed.formula, columns=ddf.columns)
        cor, var = residual_parts(residual)
        plan = ChunkPlan.from_formula(parsed, ddf._meta, weights=weights, offset=offset,
                                      missing=missing, extra_columns=residual_columns(residual),
                                      marginal=True)
        meta = plan.complete(ddf._meta)[0]
        if var is not None or cor is None or isinstance(cor, CAR1):
            bind_marginal(residual, meta)  # refuses them, naming the structures allowed
        summary = summary_pass(plan, ddf, progress)
        if summary is None:
            raise DesignError("data has no rows")
        encoder = plan.encoder(summary)
        msum = marginal_summary_pass(encoder, residual, ddf, progress)
        if msum.split:
            raise alignment_error(cor, msum.split)
        keep = aliased_columns(msum.xx, encoder.x_names_all)
        design = encoder.design_summary(keep)
        levels = visit_levels(residual, msum.times, msum.bys, msum.largest)
        if len(levels.time) < 2:
            raise DesignError(f"{type(cor).__name__}: {_time_column(cor) or '(row order)'!r} "
                              "has one visit; a visit covariance needs at least two")
        k = np.flatnonzero(keep)
        shift = np.linalg.lstsq(msum.xx[np.ix_(k, k)], msum.xy[k], rcond=None)[0]
        book = MarginalBook(residual, levels, k, shift)
        sums = marginal_sums_pass(encoder, book, ddf, progress)
        structure = bind_marginal(residual, meta, whole=levels)
        model = cls(design, encoder, None, ddf, msum.log_w, keep, summary.values)
        model.residual = residual
        model.book = book
        model.data = sums.finished()
        model.structure = structure
        model.progress = progress
        return model

    def deviance_function(self, reml: bool = True) -> SummedMarginalCriterion:
        """The marginal criterion on the summed patterns (no pass over the rows)."""
        if reml not in self._deviance:
            self._deviance[reml] = SummedMarginalCriterion(self.data, self.structure.cov,
                                                           reml=reml)
        return self._deviance[reml]

    def fit(self, method: str = "REML", *, optimizer: str = "SLSQP",
            start: np.ndarray | None = None, ems: str | None = None,
            anova_method: str | None = None, warn: bool = True,
            control=None) -> "DistributedMarginalResults":
        """REML or ML fit in the client (arguments as
        :meth:`mixedanova.model.LinearMixedModel.fit`; ``optimizer`` is not used:
        the marginal engine's trust-region Newton method, as in memory)."""
        from ..likelihood.visit_structure import marginal_state

        method = check_residual_method(method, ems, anova_method)
        self.check_optimizer(optimizer)
        control = check_control(control)
        crit = self.deviance_function(reml=(method == "REML"))
        if start is not None:
            start = np.asarray(start, dtype=float).ravel()
            if start.size == 0:  # a marginal fit's (empty) theta
                start = None
            elif start.size != crit.k:
                raise FitError(f"start must hold {crit.k} visit-covariance parameters, not "
                               f"{start.size}")
        if start is None:
            start = rough_start(crit.data, crit.cov)
        state = marginal_state(crit, self.structure, start, control)
        state = dataclasses.replace(state, beta=state.beta + self.book.shift)
        if self.design.has_weights:
            state = dataclasses.replace(state,
                                        objective=state.objective + self.weights_constant())
        res = DistributedMarginalResults(self.design, state, model=self)
        if warn:
            warn_fit(res)
        return res


class DistributedMarginalResults(DistributedResidualResults):
    """A marginal model fitted to a Dask data frame: the level-sized results (fixed
    effects, SEs, Satterthwaite and Kenward-Roger df from the summed patterns,
    :attr:`residual_params`); fitted values and residuals as lazy Dask series; the
    row-sized views of the visit covariance are refused."""

    @staticmethod
    def _check_ddf(ddf: str) -> None:
        return None  # Kenward-Roger of a marginal model needs the pattern sums only

    @cached_property
    def resid_normalized(self):
        raise DesignError("resid_normalized is one value per observation (decorrelated "
                          "within each subject); not available for a fit on a Dask data "
                          "frame (residuals(type='response') is a lazy Dask series)")

    def __repr__(self) -> str:
        return (f"<DistributedMarginalResults {self.method}: "
                f"{self.design.formula.formula!r} + {' + '.join(self.residual_structure)}, "
                f"nobs={self.nobs}>")


def lmm_dask_marginal(formula: str, ddf, method: str = "REML", *, residual,
                      missing: str = "drop", weights=None, offset=None,
                      restricted: bool = False, **kwargs) -> DistributedMarginalResults:
    """:func:`mixedanova.lmm` of a marginal model (no random-effects term, a visit
    covariance in ``residual=``) on a Dask data frame (see the module docstring)."""
    check_keywords(kwargs)
    progress = kwargs.pop("progress", False)
    if not isinstance(method, str) or method.upper() not in ("REML", "ML", "ANOVA"):
        raise FitError(f"method must be one of REML, ML, ANOVA, not {method!r}")
    model = DistributedMarginalModel.from_formula(
        formula, ddf, residual=residual, missing=missing, weights=weights, offset=offset,
        restricted=restricted, progress=progress)
    return model.fit(method, **kwargs)
