"""Linear mixed models fitted to a Dask data frame (issue 19).

``ma.lmm(formula, ddf)`` with ``ddf`` a ``dask.dataframe.DataFrame`` runs:

1. one pass over the partitions for the codebook (levels of the grouping and
   fixed factors, missing values; :mod:`mixedanova.design.chunked`);
2. one pass computing each partition's cross-products of ``[Z X y]`` on the
   workers, summed in a tree (:mod:`mixedanova.distributed.passes`);
3. the optimizer, the convergence check and the estimates in the client, on the
   summed level-sized system: the same
   :class:`~mixedanova.likelihood.criterion.ProfiledDeviance` and pipeline as an
   in-memory fit, so the numbers are the in-memory fit's.

When the random effects explain nearly all of the response the engine
recomputes the penalized residual sum of squares from the rows; on a Dask frame
that is one more distributed pass (:class:`DistributedDeviance`), not a gather.

The results (:class:`DistributedLmmResults`) hold no rows: fixed effects, SEs,
variance components, BLUPs, Satterthwaite df and the summary are level-sized;
fitted values, residuals and ``predict`` on the fit's data or on a Dask frame are
lazy Dask series.
"""
from __future__ import annotations

import dataclasses
import warnings
from functools import cached_property

import numpy as np
import pandas as pd

from ..design.chunked import (ChunkEncoder, ChunkPlan, DesignSummary, aliased_columns,
                              prototype_frame)
from ..design.formula import parse_formula
from ..errors import (ArgumentError, ConvergenceWarning, DesignError, FitError,
                      SingularFitWarning, user_stacklevel)
from ..likelihood.control import LmmControl, check_control
from ..likelihood.criterion import ProfiledDeviance
from ..results.anova import AnovaResults
from ..results.lmm import LinearMixedResults
from .rowless_results import RowlessInference
from .passes import (cross_product_pass, exact_quantiles, keep_fixed_columns, pwrss_pass,
                     summary_pass)

__all__ = ["DistributedModel", "DistributedLmmResults", "DistributedAnovaResults",
           "DistributedDeviance", "RemoteRows", "lmm_dask", "check_keywords", "warn_fit",
           "fitted_part"]

_OPTIMIZERS = ("SLSQP", "L-BFGS-B", "Powell", "Nelder-Mead", "COBYLA", "COBYQA", "TNC",
               "trust-constr")
_FIT_KEYWORDS = ("optimizer", "start", "ems", "anova_method", "warn", "control", "progress")


@dataclasses.dataclass(frozen=True)
class RemoteRows:
    """Where the rows behind the summed cross-products live (the Dask frame and
    the encoder), and the working-coordinate maps applied to ``Z`` so far."""

    encoder: ChunkEncoder
    ddf: object
    keep: np.ndarray
    maps: tuple | None = None

    def transformed(self, maps: list[np.ndarray]) -> "RemoteRows":
        new = tuple(maps) if self.maps is None else tuple(a @ b for a, b in
                                                          zip(self.maps, maps))
        return dataclasses.replace(self, maps=new)

    def pwrss(self, shift: np.ndarray, scale: float, beta: np.ndarray, bs: list) -> float:
        """``sum |y~ - X beta - Z b|^2`` over the rows (one distributed pass)."""
        return pwrss_pass(self.encoder, self.ddf, self.keep, self.maps, shift, scale, beta, bs)


class DistributedDeviance(ProfiledDeviance):
    """:class:`~mixedanova.likelihood.criterion.ProfiledDeviance` whose explicit
    penalized residual sum of squares is a distributed pass over the partitions
    (``rows`` is one :class:`RemoteRows`; a pandas frame's slices for its subclass
    :class:`~mixedanova.distributed.frame_fit.FrameRows`)."""

    def explicit_pwrss(self, f, templates) -> float:
        remote = self.rows[0]
        beta, u = f._solution_std()
        offs = np.cumsum([0] + [t.nlev * t.q for t in self.cp.terms])
        bs = [u[offs[k]:offs[k + 1]].reshape(t.nlev, t.q) @ T.T
              for k, (t, T) in enumerate(zip(self.cp.terms, templates))]
        rows = remote.pwrss(self.cp.shift[:, 0], float(self.cp.scale[0]), beta, bs)
        return float(u @ u) + rows


class DistributedModel:
    """A linear mixed model whose data are a Dask data frame (see the module docstring).

    Built by :meth:`from_formula` after the two passes; holds the summed
    cross-products (level-sized), never the rows.
    """

    def __init__(self, design: DesignSummary, encoder: ChunkEncoder, cp, ddf, log_w: float,
                 keep: np.ndarray, values: dict | None = None) -> None:
        self.design = design
        self.values = values or {}  # distinct values of the factor columns (pass 1)
        self.encoder = encoder
        self.cp = cp
        self.ddf = ddf
        self.log_w = log_w
        self.keep = keep
        self.residual = None
        self._deviance: dict[bool, ProfiledDeviance] = {}
        self.progress = False
        self.xtx: np.ndarray | None = None      # unweighted X'X of the kept columns
        self.prototype: pd.DataFrame | None = None  # every level of the fixed factors

    def remember_rows(self, xx_all: np.ndarray, plan: ChunkPlan, summary) -> None:
        """Keep what the inference reads of the rows besides the cross-products: the
        unweighted ``X'X`` of the kept columns (the type 1 and 2 hypotheses) and the
        codebook's prototype frame (the type 3 columns of every partition)."""
        idx = np.flatnonzero(self.keep)
        self.xtx = np.asarray(xx_all, dtype=float)[np.ix_(idx, idx)]
        self.prototype = prototype_frame(plan, summary)

    @classmethod
    def from_formula(cls, formula: str, ddf, *, missing: str = "drop", weights=None,
                     offset=None, restricted: bool = False, progress: bool = False,
                     complete_in: tuple[str, ...] = ()) -> "DistributedModel":
        """Parse ``formula``, learn the codebook (pass 1) and sum the partitions'
        cross-products (pass 2).  ``complete_in``: further columns whose missing
        values drop a row (:meth:`update`: the first model's columns)."""
        parsed = parse_formula(formula, restricted=restricted)
        if parsed.restricted:
            from ..design.restricted import check_restricted
            check_restricted(parsed.formula, columns=ddf.columns)
        plan = ChunkPlan.from_formula(parsed, ddf._meta, weights=weights, offset=offset,
                                      missing=missing, extra_columns=tuple(complete_in))
        summary = summary_pass(plan, ddf, progress)
        if summary is None:
            raise DesignError("data has no rows")
        encoder = plan.encoder(summary)
        sums = cross_product_pass(encoder, ddf, progress)
        keep = aliased_columns(sums.xx, encoder.x_names_all)
        design = encoder.design_summary(keep)
        cp = keep_fixed_columns(sums.cp, keep)
        model = cls(design, encoder, cp, ddf, sums.log_w, keep, summary.values)
        model.remember_rows(sums.xx, plan, summary)
        model.progress = progress
        return model

    def deviance_function(self, reml: bool = True) -> ProfiledDeviance:
        """The profiled objective on the summed cross-products (one per criterion;
        no pass over the rows)."""
        if reml not in self._deviance:
            rows = (RemoteRows(self.encoder, self.ddf, np.flatnonzero(self.keep)),)
            self._deviance[reml] = DistributedDeviance(self.cp, self.design.theta_layout(),
                                                       reml, rows=rows)
        return self._deviance[reml]

    def weights_constant(self) -> float:
        """``-sum(log w_i)`` (0 without weights), as the in-memory model's."""
        return -self.log_w if self.design.has_weights else 0.0

    def fit(self, method: str = "REML", *, optimizer: str = "SLSQP",
            start: np.ndarray | None = None, ems: str | None = None,
            anova_method: str | None = None, warn: bool = True,
            control: LmmControl | None = None) -> "DistributedLmmResults":
        """REML or ML fit on the summed system (arguments as
        :meth:`mixedanova.model.LinearMixedModel.fit`)."""
        from ..likelihood.convergence import check_convergence
        from ..likelihood.criterion import fit_state
        from ..likelihood.optimizer import optimize_theta
        from ..likelihood.threads import engine_threads

        if not isinstance(method, str) or method.upper() not in ("REML", "ML", "ANOVA"):
            raise FitError(f"method must be one of REML, ML, ANOVA, not {method!r}")
        method = method.upper()
        if method == "ANOVA":
            if control is not None:
                raise FitError("control (optimizer settings) does not apply to "
                               "method='ANOVA'")
            if start is not None:
                raise FitError("start (a starting theta) does not apply to method='ANOVA'")
            return self._fit_moments(ems or "unrestricted", anova_method or "auto")
        for name, value in (("ems", ems), ("anova_method", anova_method)):
            if value is not None:
                raise FitError(f"{name}={value!r} applies to method='ANOVA' only")
        optimizer = self.check_optimizer(optimizer)
        if start is not None:
            start = self.design.theta_layout().check_start(start)
        control = check_control(control)
        dev = self.deviance_function(reml=(method == "REML"))
        with engine_threads(dev.system):
            opt = optimize_theta(dev, start, method=optimizer, control=control)
            conv = check_convergence(dev, opt.theta, opt.hessian, opt.working, control=control)
            if not conv.converged and not opt.converged:
                note = (f"the optimizer stopped early: {opt.message} (LmmControl maxiter="
                        f"{control.maxiter}, tol={control.tol:g})")
                conv = dataclasses.replace(conv, messages=conv.messages + (note,))
            state = fit_state(dev, opt, conv)
        if self.design.has_weights:
            state = dataclasses.replace(state,
                                        objective=state.objective + self.weights_constant())
        res = DistributedLmmResults(self.design, state, model=self)
        if warn:
            warn_fit(res)
        return res

    @staticmethod
    def check_optimizer(optimizer: str) -> str:
        """The scipy method's canonical name (a FitError for an unknown one)."""
        canon = {o.lower(): o for o in _OPTIMIZERS}
        if not isinstance(optimizer, str) or optimizer.lower() not in canon:
            raise FitError(f"optimizer must be one of {', '.join(_OPTIMIZERS)}, not "
                           f"{optimizer!r}")
        return canon[optimizer.lower()]

    def _fit_moments(self, ems: str, anova_method: str) -> "DistributedAnovaResults":
        """Method of moments from a distributed group-by of cell means and sums of
        squares (:mod:`~mixedanova.distributed.cells`); GLS and BLUPs at the
        moment estimates on the summed cross-products, as in memory."""
        from ..likelihood.criterion import state_at_moments
        from ..moments.anova_design import formula_anova_terms
        from ..moments.moments import fit_anova_data
        from .cells import CellCodebook, cell_data, cell_pass

        d = self.design
        if ems not in ("unrestricted", "restricted"):
            raise FitError(f"ems must be one of unrestricted, restricted, not {ems!r}")
        if anova_method not in ("auto", "rules", "method3"):
            raise FitError(f"anova_method must be one of auto, rules, method3, not "
                           f"{anova_method!r}")
        fixed, random, intercept = formula_anova_terms(d, d.columns)
        for v in dict.fromkeys(v for t in fixed for v in t):
            if v not in self.values:
                raise DesignError(
                    f"method='ANOVA' on a Dask data frame takes factors in the fixed "
                    f"part; {v!r} is a numeric covariate (Method III with covariates "
                    "needs the rows: fit by REML / ML, or compute() the data and fit "
                    "in memory)")
        names = list(dict.fromkeys(v for t in fixed + random for v in t))
        plan = self.encoder.plan
        values = dict(self.values)
        for tc in self.encoder.term_codes:  # the grouping factors' levels (pass 1)
            values.update(zip(tc.factors, tc.categories))
        book = CellCodebook.from_values(names, values, self.ddf._meta)
        cells = cell_pass(plan, book, self.ddf, self.progress)
        coded = cell_data(cells, book, d.formula.response.strip(), center=intercept)
        state = fit_anova_data(coded, fixed, random, intercept=intercept, ems=ems,
                               method=anova_method)
        fs = state_at_moments(self.deviance_function(reml=True), state,
                              [":".join(b.factors) for b in d.blocks])
        return DistributedAnovaResults(d, fs, model=self)

    def refit(self, *args, **kwargs):
        raise FitError("refit() (a new response) is not available for a fit on a Dask data "
                       "frame; add the response as a column and call ma.lmm again")

    def update(self, formula: str, data=None) -> "DistributedModel":
        """A new, unfitted model for ``formula`` on the same Dask frame and options
        (its own two passes), as :meth:`mixedanova.model.LinearMixedModel.update`:
        rows with a missing value in this model's columns stay dropped (lme4's
        ``update`` of a model fitted to the complete cases).  ``data``: another Dask
        frame instead (its complete rows in the new formula's columns)."""
        if data is not None and not hasattr(data, "to_delayed"):
            raise ArgumentError("update(data=) of a fit on a Dask data frame takes a Dask "
                                "data frame; fit a pandas frame with ma.lmm")
        return type(self).from_formula(formula, self.ddf if data is None else data,
                                       **self.update_options(data is None))

    def update_options(self, same_rows: bool) -> dict:
        """The keywords of :meth:`from_formula` that :meth:`update` carries over."""
        d = self.design
        return dict(missing=self.encoder.plan.missing, weights=d.weights_column,
                    offset=d.offset_column, restricted=d.formula.restricted,
                    progress=self.progress,
                    complete_in=self.encoder.plan.used if same_rows else ())


def warn_fit(res: "DistributedLmmResults") -> None:
    msgs = list(res.convergence_messages)
    if msgs:
        warnings.warn("; ".join(msgs), ConvergenceWarning, stacklevel=user_stacklevel())
    elif res.is_singular:
        warnings.warn("boundary (singular) fit: a variance is estimated as 0 or a correlation "
                      "as +-1; the random-effects structure may be too rich for the data",
                      SingularFitWarning, stacklevel=user_stacklevel())


def fitted_part(chunk: pd.DataFrame, encoder: ChunkEncoder, keep: np.ndarray,
                beta: np.ndarray, blups: list, what: str, sigma: float) -> pd.Series:
    """One chunk's fitted values or residuals (``what``: ``"fitted"``, ``"resid"``,
    ``"resid_pearson"``, ``"resid_scaled"``) over its complete rows, indexed by them."""
    e = encoder.encode(chunk)
    if e is None:
        return pd.Series(np.zeros(0), index=chunk.index[:0], name=what)
    fit = e.X[:, keep] @ beta
    if e.offset is not None:
        fit = fit + e.offset
    for c, z, b in zip(e.codes, e.zraws, blups):
        fit = fit + np.einsum("ij,ij->i", z, b[c])
    if what == "fitted":
        out = fit
    else:
        out = e.y - fit
        if what in ("resid_pearson", "resid_scaled") and e.weights is not None:
            out = out * np.sqrt(e.weights)
        if what == "resid_scaled":
            out = out / sigma
    return pd.Series(out, index=e.index, name=what)


@dataclasses.dataclass(frozen=True)
class _Beta:
    beta: np.ndarray


@dataclasses.dataclass(frozen=True)
class PredictionView:
    """What :func:`~mixedanova.inference.prediction.predict` reads of a fit (the
    row-less design, ``beta`` and the BLUPs): shipped to the workers instead of the
    results object."""

    design: DesignSummary
    state: _Beta
    _blups: list


def _predict_part(chunk: pd.DataFrame, view: PredictionView, re_form,
                  allow_new_levels: bool) -> pd.Series:
    from ..inference.prediction import predict
    return predict(view, chunk, re_form, allow_new_levels)


class DistributedLmmResults(RowlessInference, LinearMixedResults):
    """A linear mixed model fitted to a Dask data frame.

    Everything level-sized is as for :class:`~mixedanova.results.lmm.LinearMixedResults`
    (fixed effects, SEs, ``varcomp``, BLUPs and their conditional SDs,
    Satterthwaite df, ``summary()``); :attr:`fittedvalues`, :attr:`resid`,
    :meth:`residuals` and :meth:`predict` return lazy Dask series (``.compute()``
    them, or write them with ``to_parquet``).  The summary's residual quantiles are
    exact (:func:`~mixedanova.distributed.passes.exact_quantiles`: two or three
    passes over the data when the summary is printed).
    """

    _summary_quantiles = False

    def _lazy(self, what: str):
        m = self.model
        meta = pd.Series(np.zeros(0), name=what)
        return m.ddf.map_partitions(fitted_part, m.encoder, np.flatnonzero(m.keep),
                                    self.state.beta, self._blups, what, self.sigma,
                                    meta=meta)

    @cached_property
    def fittedvalues(self):
        """Conditional fitted values, a lazy Dask series (complete rows only)."""
        return self._lazy("fitted")

    @cached_property
    def resid(self):
        """Conditional residuals ``y - fitted``, a lazy Dask series."""
        return self._lazy("resid")

    def residuals(self, type: str = "response"):
        """lme4's residual types ``"response"``, ``"pearson"`` and ``"scaled"`` as
        lazy Dask series."""
        if type not in ("response", "pearson", "scaled"):
            raise ArgumentError(f"type must be 'response', 'pearson' or 'scaled' for a fit on "
                                f"a Dask data frame, not {type!r}")
        lazy = self._lazy(f"resid_{type}" if type != "response" else "resid")
        if self._summary_quantiles:  # the summary reads five quantiles of these
            return pd.Series(exact_quantiles(lazy, [0.0, 0.25, 0.5, 0.75, 1.0]))
        return lazy

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False,
                include_random: bool | None = None, se_fit: bool = False):
        """Predictions as lme4's ``predict``: on the fit's rows (``newdata=None``) or a
        Dask frame a lazy Dask series, on a pandas frame a pandas Series."""
        from ..inference.prediction import predict

        if include_random is not None and re_form is None:
            re_form = None if include_random else "~0"
        if se_fit:
            if not isinstance(newdata, pd.DataFrame):
                raise ArgumentError("se_fit=True on a fit on a Dask data frame takes newdata "
                                    "as a pandas DataFrame (the SEs of a Dask frame's rows "
                                    "are not computed lazily); use predict() for the means")
            return self.get_prediction(newdata, re_form, allow_new_levels,
                                       ddf="none")[["mean", "se_fit"]]
        if newdata is None:
            if re_form is None:
                return self.fittedvalues
            newdata = self.model.ddf
        if isinstance(newdata, pd.DataFrame):
            return predict(self, newdata, re_form, allow_new_levels)
        if not hasattr(newdata, "map_partitions"):
            raise DesignError(f"newdata must be a pandas or Dask DataFrame, not "
                              f"{type(newdata).__name__}")
        view = PredictionView(self.design, _Beta(self.state.beta), self._blups)
        return newdata.map_partitions(_predict_part, view, re_form, allow_new_levels,
                                      meta=pd.Series(np.zeros(0), name="predicted"))

    def _summary_parts(self) -> dict:
        self._summary_quantiles = True
        try:
            return super()._summary_parts()
        finally:
            self._summary_quantiles = False

    def __repr__(self) -> str:
        return (f"<DistributedLmmResults {self.method}: {self.design.formula.formula!r}, "
                f"nobs={self.nobs}>")


class DistributedAnovaResults(DistributedLmmResults, AnovaResults):
    """A method-of-moments fit (``method="ANOVA"``) on a Dask data frame: the EMS
    table and moment estimates of :class:`~mixedanova.results.anova.AnovaResults`,
    the row-less behaviour of :class:`DistributedLmmResults`."""

    def __repr__(self) -> str:
        return (f"<DistributedAnovaResults ANOVA: {self.design.formula.formula!r}, "
                f"nobs={self.nobs}>")


def check_keywords(kwargs: dict) -> None:
    """Refuse keyword arguments that :func:`mixedanova.lmm` does not take on a Dask frame."""
    unknown = sorted(set(kwargs) - set(_FIT_KEYWORDS))
    if unknown:
        raise ArgumentError(
            f"lmm() got unknown keyword argument(s) {', '.join(map(repr, unknown))}; it takes "
            f"formula, data, method, missing, weights, offset, residual, restricted, "
            f"{', '.join(_FIT_KEYWORDS)}")


def lmm_dask(formula: str, ddf, method: str = "REML", *, missing: str = "drop",
             weights=None, offset=None, residual=None, restricted: bool = False,
             **kwargs) -> DistributedLmmResults:
    """:func:`mixedanova.lmm` on a Dask data frame (see the module docstring).

    ``progress=True`` shows Dask's progress bar during the passes (off by default).
    A residual structure is fitted by
    :func:`mixedanova.distributed.dask_residual.lmm_dask_residual` (``ma.lmm``
    dispatches there).
    """
    check_keywords(kwargs)
    if residual is not None:
        raise ArgumentError("residual= on a Dask data frame goes through ma.lmm (or "
                            "mixedanova.distributed.dask_residual.lmm_dask_residual)")
    progress = kwargs.pop("progress", False)
    if not isinstance(method, str) or method.upper() not in ("REML", "ML", "ANOVA"):
        raise FitError(f"method must be one of REML, ML, ANOVA, not {method!r}")
    model = DistributedModel.from_formula(formula, ddf, missing=missing, weights=weights,
                                          offset=offset, restricted=restricted,
                                          progress=progress)
    return model.fit(method, **kwargs)
