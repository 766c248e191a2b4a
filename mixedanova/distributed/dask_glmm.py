"""Generalized linear mixed models fitted to a Dask data frame (issue 19).

``ma.glmm(formula, ddf, family=...)`` with ``ddf`` a ``dask.dataframe.DataFrame``
fits glmer's Laplace approximation (``nAGQ = 1``) by the in-memory engine's
optimizer (:func:`~mixedanova.glmm.fit.fit_glmm`) on an objective whose rows stay
in the partitions (:class:`DistributedLaplace`):

1. one pass for the codebook (levels of grouping and fixed factors; as ``ma.lmm``);
2. the partitions encoded once (:func:`~mixedanova.distributed.dask_glmm_passes.encode_glmm_chunk`)
   and, by default, persisted (held where they were computed: on the workers of a
   cluster, in the process for the local schedulers); ``persist=False`` re-reads
   and re-encodes them in every pass;
3. one pass for the start (the rank rule's ``X'X``, the working units of ``theta``,
   the saturated log-likelihood, the GLM start of ``beta``);
4. every PIRLS iteration at ``(theta, beta, u)`` is one pass: each partition
   computes the linear predictor, means, working weights and working response of
   its rows and returns the weighted cross-products of ``[Z X z]`` and its deviance
   (:func:`~mixedanova.distributed.dask_glmm_passes.pirls_sums`), summed in a tree;
   the client factors the summed, level-sized penalized system with the likelihood
   engine (``build_system``, as the in-memory PIRLS) and takes the step.  The
   Laplace value ``-2 log L = -2 l_sat + deviance + |u|^2 + log det`` is sums only.

The analytic gradient of the in-memory fit reads rows at every evaluation, so the
optimizer takes the engine's finite-difference path (``fit_glmm(analytic=False)``:
L-BFGS-B with forward differences, then Newton steps with difference Hessians over
``(theta, beta)``), started from the best joint modes at a few sizes of ``theta``
(``stage1_search=False``), with every difference scheme's points evaluated in
lockstep (``batch=``, :func:`~mixedanova.distributed.dask_glmm_polish.batch_values`:
one pass per PIRLS step of all points); then Newton steps with central differences
of the value and a Richardson-extrapolated Hessian for the SEs
(:mod:`~mixedanova.distributed.dask_glmm_polish`).  The estimates equal the
in-memory fit's to about 1e-10 (the tests state the figures).  The results
(:class:`DistributedGlmmResults`) hold no rows.
"""
from __future__ import annotations

import math
import uuid
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from ..design.chunked import ChunkPlan, aliased_columns
from ..design.formula import parse_formula
from ..errors import (ArgumentError, ConvergenceWarning, DesignError, FitError,
                      SingularFitWarning, user_stacklevel)
from ..glmm.fit import fit_glmm
from ..glmm.laplace import PirlsState
from ..likelihood.blocked import NotPositiveDefinite
from ..likelihood.chunk_products import finished
from ..likelihood.system import build_system
from ..results.glmm import GlmmResults
from .dask_fit import PredictionView
from .dask_glmm_polish import batch_values, polish_optimum, refine_hessian
from .dask_glmm_passes import (ChunkInfo, PirlsSums, StepArgs, add_sums, encode_glmm_chunk,
                               fitted_part, pirls_sums, setup_sums)
from .passes import exact_quantiles, run_pass, summary_pass

__all__ = ["glmm_dask", "DistributedLaplace", "DistributedGlmmResults", "RemoteState",
           "RowlessData"]

_MAX_ITER = 200
_STEP_TOL = 1e-11
_JOINT_TOL = 1e-10
_SPLIT = 8  # partitions' sums added per node of the tree


@dataclass(frozen=True)
class RowlessData:
    """What the optimizer reads of a GLMM's data: the layout of ``theta``, the
    number of fixed effects and of rows."""

    layout: object
    p: int
    n: int


@dataclass
class RemoteState(PirlsState):
    """A :class:`~mixedanova.glmm.laplace.PirlsState` whose rows stayed in the
    partitions (``eta``, ``mu`` and ``weights`` are None) with the deviance at the
    modes (a sum of the pass)."""

    deviance: float = math.nan


def _amax(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


class DistributedLaplace:
    """The Laplace ``-2 log L(theta, beta)`` with PIRLS steps as Dask passes (the
    interface of :class:`~mixedanova.glmm.laplace.LaplaceObjective` that
    :func:`~mixedanova.glmm.fit.fit_glmm`'s finite-difference path reads).

    Parameters
    ----------
    family : Family
    parts : list
        Delayed :class:`~mixedanova.distributed.dask_glmm_passes.GlmmChunk` per partition.
    data : RowlessData
    keep : numpy.ndarray
        Indices of the kept fixed-effect columns.
    sizes : list of (nlev, q)
    saturated : float
        The saturated log-likelihood (a sum).
    start : numpy.ndarray
        The GLM start of ``beta``.
    progress : bool
    """

    def __init__(self, family, parts: list, data: RowlessData, keep: np.ndarray,
                 sizes: list[tuple[int, int]], saturated: float, start: np.ndarray,
                 progress: bool = False) -> None:
        self.family = family
        self.parts = parts
        self.data = data
        self.keep = keep
        self.shapes = sizes
        self.sizes = [nl * q for nl, q in sizes]
        self.Q = int(sum(self.sizes))
        self.saturated_loglik = saturated
        self.beta0 = start
        self.progress = progress
        self.fast = self.fast_joint = None  # (read by fit_glmm; no row solvers here)
        self.count_gap = None
        self.nevals = 0
        self.passes = 0
        self._u = np.zeros(self.Q)
        self._systems: dict[bool, object] = {}
        self._dfam = None

    def last_modes(self) -> np.ndarray:
        """The modes of the last PIRLS (the warm start of the next)."""
        return self._u.copy()

    def start_beta(self) -> np.ndarray:
        return self.beta0.copy()

    def bs_of(self, templates, u: np.ndarray) -> tuple[np.ndarray, ...]:
        offs = np.cumsum([0] + self.sizes)
        return tuple(u[offs[k]:offs[k + 1]].reshape(nl, q) @ T.T
                     for k, ((nl, q), T) in enumerate(zip(self.shapes, templates)))

    def step_pass(self, args, func=pirls_sums):
        """One distributed pass: the partitions' :class:`PirlsSums` at ``args`` (a
        :class:`StepArgs`; with ``func=pirls_sums_many`` a list of them, giving a
        :class:`SumsList`) summed in a tree (the graph written directly: building
        it through ``delayed`` tokenizes the arguments, several times the work of
        a small partition's pass)."""
        from dask import delayed
        from dask.delayed import Delayed
        from dask.highlevelgraph import HighLevelGraph

        if self._dfam is None:  # once (every pass's keys are fresh)
            self._dfam = delayed(self.family, pure=True, traverse=False)
        self.passes += 1
        name = f"glmm-pirls-{uuid.uuid4().hex}"
        akey = f"{name}-args"
        layer: dict = {akey: args}
        keys = []
        for i, p in enumerate(self.parts):
            layer[(name, i)] = (func, self._dfam.key, akey, p.key)
            keys.append((name, i))
        level = 0
        while len(keys) > 1 or level == 0:
            nxt = []
            for j in range(0, len(keys), _SPLIT):
                layer[(f"{name}-sum{level}", j)] = (add_sums, keys[j:j + _SPLIT])
                nxt.append((f"{name}-sum{level}", j))
            keys, level = nxt, level + 1
        graph = HighLevelGraph.from_collections(name, layer,
                                                dependencies=[self._dfam] + list(self.parts))
        total = run_pass([Delayed(keys[0], graph, layer=name)], self.progress)
        if total is None:
            raise DesignError("data has no rows")
        return total

    def _evaluate(self, templates, beta, u, joint, prev=None) -> PirlsSums:
        if prev is None:
            args = StepArgs(self.keep, beta, self.bs_of(templates, u), joint)
        else:
            b0, u0, db, du = prev
            args = StepArgs(self.keep, beta, self.bs_of(templates, u), joint, b0,
                            self.bs_of(templates, u0), db, self.bs_of(templates, du))
        return self.step_pass(args)

    def factor_of(self, sums: PirlsSums, joint: bool, templates):
        """The engine's factor of the summed penalized system (``joint``: with ``X``)."""
        cp = finished(sums.cp).standardized()
        system = self._systems.get(joint)
        if system is None:
            system = self._systems[joint] = build_system(cp)
        else:
            system.refresh(cp)
        return system.factor(templates)

    def pirls(self, theta: np.ndarray, beta: np.ndarray | None = None,
              u0: np.ndarray | None = None, joint: bool = False,
              joint_tol: float = _JOINT_TOL) -> RemoteState:
        """Converged modes at ``(theta, beta)`` (as
        :meth:`~mixedanova.glmm.laplace.LaplaceObjective.pirls`, each iteration a pass).

        Raises
        ------
        FitError
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                return self._pirls(theta, beta, u0, joint, joint_tol)
            except FitError:
                start = self._u if u0 is None else np.asarray(u0, dtype=float)
                if not np.any(start):
                    raise
                return self._pirls(theta, beta, np.zeros(self.Q), joint, joint_tol)

    def _pirls(self, theta, beta, u0, joint, joint_tol) -> RemoteState:
        theta = np.asarray(theta, dtype=float)
        templates = self.data.layout.templates(theta)
        beta = self.start_beta() if beta is None else np.asarray(beta, dtype=float)
        u = (self._u if u0 is None else np.asarray(u0, dtype=float)).copy()
        st = self._evaluate(templates, beta, u, joint)
        if not st.valid:
            u = np.zeros(self.Q)
            st = self._evaluate(templates, beta, u, joint)
            if not st.valid:
                raise FitError("the starting linear predictor is outside the family's domain")
        last = False
        stalls, prev_size = 0, math.inf
        for it in range(1, _MAX_ITER + 1):
            pdev = st.deviance + float(u @ u)
            try:
                f = self.factor_of(st, joint, templates)
                b_new, u_new = f.solution()
            except (NotPositiveDefinite, FitError):
                raise FitError("PIRLS: the penalized weighted least-squares system is "
                               "singular") from None
            du = u_new - u
            db = (b_new - beta) if joint else np.zeros(0)
            size = max(_amax(du), _amax(db))
            trial = None
            if joint:
                # the step's pass also gives max |Z Lambda du + X db| and max |eta|
                if last:
                    break
                trial = self._evaluate(templates, beta + db, u + du, joint,
                                       prev=(beta, u, db, du))
                done = trial.amax_step <= joint_tol * (1.0 + trial.amax_eta)
            else:
                done = size <= _STEP_TOL * (1.0 + _amax(u))
            if last or done:
                break
            step = 1.0
            accepted = False
            for _ in range(40):
                u_try = u + step * du
                b_try = beta + step * db if joint else beta
                st_try = trial if (trial is not None and step == 1.0) else \
                    self._evaluate(templates, b_try, u_try, joint)
                if st_try.valid:
                    pdev_try = st_try.deviance + float(u_try @ u_try)
                    if pdev_try <= pdev + 1e-12 * max(1.0, abs(pdev)):
                        accepted = True
                        break
                step *= 0.5
            if not accepted:
                if size > 1e-6 * (1.0 + _amax(u)):
                    raise FitError("PIRLS: no step decreases the penalized deviance (the "
                                   "modes are on the boundary of the link's domain)")
                break
            u, st = u_try, st_try
            if joint:
                beta = b_try
            if size < 1e-8 * (1.0 + _amax(u)) and size > 0.5 * prev_size:
                stalls += 1
            prev_size = size
            if stalls >= 2 or (step < 1.0 and abs(pdev - pdev_try)
                               <= 1e-15 * max(1.0, abs(pdev))):
                last = True
        else:
            raise FitError(f"PIRLS did not converge in {_MAX_ITER} iterations")
        dev = st.deviance
        ll = self.saturated_loglik - 0.5 * dev + st.gap
        value = -2.0 * self.saturated_loglik + dev + float(u @ u) + f.ldL2 - 2.0 * st.gap
        self._u = u.copy()
        self.nevals += 1
        return RemoteState(theta.copy(), beta.copy(), u, None, None, None, float(f.ldL2), ll,
                           float(value), f, it, deviance=float(dev))

    def __call__(self, theta: np.ndarray, beta: np.ndarray) -> float:
        """The Laplace ``-2 log L`` at ``(theta, beta)`` (``inf`` where PIRLS fails)."""
        try:
            return self.pirls(theta, beta).value
        except FitError:
            return math.inf


@dataclass(frozen=True)
class BetaView:
    """The fixed effects as the prediction code reads them (``state.beta``)."""

    beta: np.ndarray


def predict_part(chunk: pd.DataFrame, view: PredictionView, family, type: str, re_form,
                 allow_new_levels: bool) -> pd.Series:
    """Predictions for one partition of ``newdata`` (link or response scale)."""
    from ..inference.prediction import predict

    eta = predict(view, chunk, re_form, allow_new_levels)
    if type == "link":
        return eta.rename("predicted")
    vals = eta.to_numpy(dtype=float)
    out = np.full(len(vals), np.nan)
    ok = np.isfinite(vals)
    out[ok] = family.link.linkinv(vals[ok])
    return pd.Series(out, index=eta.index, name="predicted")


class DistributedGlmmResults(GlmmResults):
    """A GLMM fitted to a Dask data frame (see the module docstring).

    Level-sized results are as :class:`~mixedanova.results.glmm.GlmmResults`'s
    (fixed effects, SEs, variance components, conditional modes and their SDs,
    logLik, AIC, BIC, deviance, ``summary()``); :attr:`linear_predictor`,
    :attr:`fittedvalues` and :meth:`resid` are lazy Dask series.  ``passes`` is the
    number of distributed PIRLS passes the fit took.
    """

    def __init__(self, *, frame, info: ChunkInfo, keep: np.ndarray, passes: int,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.frame = frame
        self.info = info
        self.keep = keep
        self.passes = passes
        self._quantiles = False

    @property
    def deviance(self) -> float:
        """``deviance(m)``: the sum of the squared deviance residuals at the modes
        (summed in the last pass)."""
        return float(self.fit.state.deviance)

    def _lazy(self, what: str):
        bs = self.objective.bs_of(self._templates(), self.fit.state.u)
        return self.frame.map_partitions(fitted_part, self.info, self.keep, self.fit.beta,
                                         bs, what, meta=pd.Series(np.zeros(0), name=what))

    @cached_property
    def linear_predictor(self):
        """``predict(m, type = "link")`` at the data: a lazy Dask series."""
        return self._lazy("link")

    @cached_property
    def fittedvalues(self):
        """``fitted(m)``: a lazy Dask series."""
        return self._lazy("fitted")

    def resid(self, type: str = "deviance"):
        """``residuals(m, type)`` as a lazy Dask series."""
        if type not in ("deviance", "pearson", "response", "working"):
            raise ArgumentError(f"type must be 'deviance', 'pearson', 'response' or "
                                f"'working', not {type!r}")
        lazy = self._lazy(type)
        if self._quantiles:  # the summary reads five quantiles
            return pd.Series(exact_quantiles(lazy, [0.0, 0.25, 0.5, 0.75, 1.0]))
        return lazy

    def _summary_parts(self) -> dict:
        self._quantiles = True
        try:
            return super()._summary_parts()
        finally:
            self._quantiles = False

    def predict(self, newdata=None, type: str = "link", re_form=None,
                allow_new_levels: bool = False):
        """Predictions as lme4's ``predict``: on the fit's rows (``newdata=None``) or a
        Dask frame a lazy Dask series, on a pandas frame a pandas Series."""
        if type not in ("link", "response"):
            raise ArgumentError(f"type must be 'link' or 'response', not {type!r}")
        if isinstance(newdata, pd.DataFrame):
            return super().predict(newdata, type, re_form, allow_new_levels)
        if newdata is None:
            if re_form is None:
                return self.linear_predictor if type == "link" else self.fittedvalues
            newdata = self.frame
        if not hasattr(newdata, "map_partitions"):
            raise DesignError(f"newdata must be a pandas or Dask DataFrame, not "
                              f"{type(newdata).__name__}")
        view = PredictionView(self.design, BetaView(np.asarray(self.fit.beta)), self._modes)
        return newdata.map_partitions(predict_part, view, self.family, type, re_form,
                                      allow_new_levels,
                                      meta=pd.Series(np.zeros(0), name="predicted"))

    def refit(self, *args, **kwargs):
        raise FitError("refit() (a new response) is not available for a GLMM fitted to a "
                       "Dask data frame; add the response as a column and call ma.glmm again")

    def null_model(self):
        raise FitError("the null model (R2, ICC of a GLMM) refits the data; not available "
                       "for a GLMM fitted to a Dask data frame")

    def _rows_needed(self, what: str, why: str):
        raise DesignError(f"{what} {why}; not available for a GLMM fitted to a Dask data "
                          "frame")

    def variance_components(self) -> dict:
        self._rows_needed("variance_components()", "reads the variance of X beta over "
                          "the rows")

    def r2(self):
        self._rows_needed("r2()", "reads the variance of X beta over the rows")

    def icc(self, by_group: bool = False):
        self._rows_needed("icc()", "reads the variance of X beta over the rows")

    def simulate(self, n: int = 1, seed=None, use_random: bool = False):
        self._rows_needed("simulate()", "draws one response per row")

    def emmeans(self, *args, **kwargs):
        self._rows_needed("emmeans()", "builds its reference grid from the rows")

    def objective_at(self, theta, beta) -> float:
        """The Laplace ``-2 log L`` at ``(theta, beta)`` (distributed passes)."""
        return self.objective(np.asarray(theta, float), np.asarray(beta, float))

    def __repr__(self) -> str:
        return f"<DistributedGlmmResults {self.family.label}: {self.formula!r}, nobs={self.nobs}>"


def _check_family(fam, nagq: int) -> None:
    if nagq != 1:
        raise ArgumentError(f"nAGQ = {nagq} on a Dask data frame: only the Laplace fit "
                            "(nAGQ = 1) is available there (nAGQ = 0's joint modes and "
                            "quadrature are not built for Dask yet)")
    if fam.has_param and fam.param is None:
        what = "shape" if fam.name == "negative_binomial" else "dispersion"
        raise ArgumentError(f"the {fam.label} family's {what} is estimated by refits; not "
                            "available on a Dask data frame yet (give it fixed in the "
                            "family object)")
    if fam.information != "expected":
        raise ArgumentError("information='observed' is not available on a Dask data frame")


def glmm_dask(formula: str, reader, ddf, *, nagq: int = 1, weights=None, offset=None,
              missing: str = "drop", start_theta=None, names: dict | None = None,
              persist: bool = True, progress: bool = False) -> DistributedGlmmResults:
    """:func:`mixedanova.glmm` on a Dask data frame (see the module docstring).

    Parameters
    ----------
    formula : str
        As given (for the results).
    reader : ResponseReader
        Reads the response's columns per partition (``cbind``, expressions).
    ddf : dask.dataframe.DataFrame
    persist : bool
        Keep the encoded partitions between passes (default) or re-read them.
    """
    from dask import delayed, persist as dask_persist

    fam = reader.family
    _check_family(fam, nagq)
    if missing not in ("drop", "raise"):
        raise ArgumentError(f"missing must be 'drop' or 'raise', not {missing!r}")
    for name, v in (("weights", weights), ("offset", offset)):
        if v is not None and not isinstance(v, str):
            raise ArgumentError(f"{name}= on a Dask data frame is a column name, not "
                                f"{type(v).__name__}")
    text, response = reader.read(ddf._meta_nonempty)
    meta = reader(ddf._meta_nonempty).iloc[:0]
    frame = ddf.map_partitions(reader, meta=meta)
    parsed = parse_formula(text)
    plan = ChunkPlan.from_formula(parsed, meta, weights=weights, offset=offset,
                                  missing=missing)
    summary = summary_pass(plan, frame, progress)
    if summary is None:
        raise DesignError("data has no rows")
    encoder = plan.encoder(summary, check_levels=False)
    if any(getattr(b, "structure", "us") != "us" for b in encoder.blocks):
        raise DesignError("structured random-effect covariances are available in ma.lmm "
                          "only, not in ma.glmm")
    info = ChunkInfo(encoder, reader, fam, response.kind, response.label,
                     response.trials_column, weights is not None)
    di = delayed(info, pure=True, traverse=False)
    parts = [delayed(encode_glmm_chunk, pure=True)(di, p) for p in frame.to_delayed()]
    if persist:
        parts = list(dask_persist(*parts))
    dfam = delayed(fam, pure=True, traverse=False)
    setup = run_pass([delayed(setup_sums, pure=True)(dfam, p) for p in parts], progress)
    if setup is None:
        raise DesignError("data has no rows")
    keep = aliased_columns(setup.xx, encoder.x_names_all)
    design = encoder.design_summary(keep)
    kidx = np.flatnonzero(keep)
    xwx = setup.xwx[np.ix_(kidx, kidx)]
    start = np.linalg.solve(xwx, setup.xwz[kidx]) if len(kidx) else np.zeros(0)
    layout = design.theta_layout()
    scale = []
    for zsq, q in zip(setup.zsq, layout.qs):
        rms = np.sqrt(zsq / setup.n)
        rms = np.where(rms > 0, rms, 1.0)
        scale += [1.0 / rms[i] for j in range(q) for i in range(j, q)]
    obj = DistributedLaplace(fam, parts, RowlessData(layout, len(kidx), setup.n), kidx,
                             [(b.nlev, b.q) for b in design.blocks], setup.saturated, start,
                             progress)
    start_th = None if start_theta is None else layout.check_start(start_theta)
    try:
        fit = fit_glmm(obj, start_theta=start_th, analytic=False, scale=np.asarray(scale),
                       batch=lambda pts: batch_values(obj, pts, obj.last_modes()),
                       stage1_search=False)
        if fit.converged:
            fit = refine_hessian(obj, polish_optimum(obj, fit))
    except FitError as exc:
        raise FitError(f"{exc} (on a Dask data frame the fit at the separation limit and "
                       "the separation check, which read rows, are not available: fit "
                       "in memory to diagnose)") from None
    names = names or {}
    x_names = tuple(names.get(n.replace(" ", ""), n) for n in design.x_names)
    res = DistributedGlmmResults(frame=frame, info=info, keep=kidx, passes=obj.passes,
                                 design=design, family=fam, data=None, fit=fit, nagq=1,
                                 x_names=x_names, response=response.label, objective=obj,
                                 formula=formula, model=None)
    if res.is_singular:
        warnings.warn("boundary (singular) fit: a random-effects covariance is singular "
                      f"(theta = {np.round(res.theta, 6).tolist()})", SingularFitWarning,
                      stacklevel=user_stacklevel())
    if not res.converged:
        warnings.warn("; ".join(res.convergence_messages) or "the fit did not converge",
                      ConvergenceWarning, stacklevel=user_stacklevel())
    return res
