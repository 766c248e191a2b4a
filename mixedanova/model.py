"""The one place that runs the pipeline: formula -> design -> engine -> results.

:class:`LinearMixedModel` holds a :class:`~mixedanova.design.build.Design` and fits it
with the likelihood engine (:mod:`mixedanova.likelihood`) or the method of
moments (:mod:`mixedanova.moments`), returning a
:class:`~mixedanova.results.lmm.LinearMixedResults`.  Results that need more fits
(profile intervals, ML refits, bootstrap, reduced models) ask the model they
carry (``res.model``) through :meth:`LinearMixedModel.deviance_function`,
:meth:`LinearMixedModel.fit`, :meth:`LinearMixedModel.refit` and
:meth:`LinearMixedModel.update`, as lme4 does.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .design import Design, DesignError, build_design
from .design.formula import parse_formula
from .likelihood.control import LmmControl, check_control
from .residual import bind_marginal, bind_residual, residual_columns
from .results.lmm import LinearMixedResults
from .errors import (ArgumentError, ConvergenceWarning, FitError, SingularFitWarning,
                     user_stacklevel)

if TYPE_CHECKING:
    from .likelihood.criterion import ProfiledDeviance
    from .results.anova import AnovaResults

# The likelihood engine (scipy.sparse, scipy.linalg, scipy.optimize) is imported
# where a fit needs it, so that ``import mixedanova`` stays cheap (issue 11).

__all__ = ["LinearMixedModel", "lmm", "ConvergenceWarning", "SingularFitWarning"]

_METHODS = ("REML", "ML", "ANOVA")
# scipy methods that take bounds (the package's optimizer is bounded)
_OPTIMIZERS = ("SLSQP", "L-BFGS-B", "Powell", "Nelder-Mead", "COBYLA", "COBYQA", "TNC",
               "trust-constr")
_EMS = ("unrestricted", "restricted")
_ANOVA_METHODS = ("auto", "rules", "method3")


class LinearMixedModel:
    """A linear mixed model specified by an lme4 formula, not yet fitted.

    Parameters
    ----------
    design : Design
        Model matrices (see :func:`mixedanova.design.build.build_design`).
    missing : {"drop", "raise"}
        How the design treated missing values; kept so that :meth:`update`
        builds new designs the same way.
    """

    def __init__(self, design: Design, *, missing: str = "drop", residual=None,
                 fixed: dict | None = None, chunked=None) -> None:
        self.design = design
        self.chunked = chunked  # a chunked set-up (distributed.frame_fit.ChunkedSetUp)
        self.missing = missing
        self.residual = residual
        self.fixed = _check_fixed(fixed, residual)
        self._deviance: dict[bool, ProfiledDeviance] = {}
        self._structure = None
        self._fixed_index: dict[int, float] = {}
        self.marginal = not design.blocks  # no random terms: a marginal (GLS) model
        self._cov, self._held = _bind_covariance(design, self.fixed, residual)
        if residual is not None and self.marginal:
            self._structure = bind_marginal(residual, design.data)
            self._fixed_index = _fixed_index(self.fixed, self._structure.names)
        elif residual is not None:
            outer = design.blocks[-1].factors if design.blocks else None
            self._structure = bind_residual(residual, design.data, outer)
            if self._cov is None:  # residual-structure parameters held (fixed=)
                self._fixed_index = _fixed_index(self.fixed, self._structure.names)

    @classmethod
    def from_formula(cls, formula: str, data: pd.DataFrame, *, missing: str = "drop",
                     weights=None, offset=None, residual=None,
                     restricted: bool = False, fixed: dict | None = None,
                     chunks: bool = True) -> "LinearMixedModel":
        """Parse ``formula`` and build the design on ``data``.

        A frame of at least ``distributed.frame_fit.CHUNKED_ROWS`` rows is set up
        chunk by chunk when the chunked route takes the model (``chunks=True``, see
        :mod:`mixedanova.distributed.frame_fit`); the design's rows are then built
        when first needed.

        Parameters
        ----------
        formula : str
            lme4 syntax, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
        data : pandas.DataFrame
        missing : {"drop", "raise"}
            Rows with missing values in used columns are dropped and counted
            (``"drop"``, lme4's default) or refused (``"raise"``).
        weights, offset : str or array, optional
            Prior weights and an offset (lme4's ``weights =`` and ``offset =``);
            see :func:`mixedanova.design.build.build_design`.
        residual : structure or tuple, optional
            Residual covariance structure (:mod:`mixedanova.residual`: ``AR1``,
            ``CAR1``, ``CompSymm``, ``VarIdent``, ``VarPower``, ``VarExp``, or a
            tuple of one correlation and one variance function).
        restricted : bool
            For a formula from an untrusted source: only column names, numbers,
            operators and allow-listed transforms are accepted, checked before
            anything is evaluated (:mod:`mixedanova.design.restricted`).
        fixed : dict, optional
            Parameters held at given values: ``"sigma"`` (the residual scale: with
            ``weights = 1 / v`` and ``s = 1`` the residual variances are the known
            ``v``, as in a meta-analysis), random-effect variances and correlations
            by ``varcomp``'s names (``"Subject: (Intercept)"``, ``"Subject:
            corr((Intercept), Days)"``; :mod:`mixedanova.design.covstruct`), a
            marginal model's visit-covariance parameters, or with ``residual=`` the
            structure's parameters (``res.residual_params`` names, e.g. ``"phi"``).
        chunks : bool
            Try the chunked set-up on a large frame (above); False: always the
            row-sized design.
        """
        if isinstance(data, pd.DataFrame):  # glmmTMB spellings: us(), diag(), ar1(0 + f | g)...
            from .structured import rewrite_structured
            formula, structured = rewrite_structured(
                formula, data, marginal=not (isinstance(fixed, dict) and set(fixed) - {"sigma"}))
            if structured is not None and residual is not None:
                raise DesignError(f"{structured.source} cannot be combined with residual=")
            residual = structured if structured is not None else residual
        from .distributed import frame_fit
        if chunks and frame_fit.use_chunks(data, residual=residual, fixed=fixed,
                                           weights=weights, offset=offset):
            setup = frame_fit.chunked_set_up(formula, data, missing=missing, weights=weights,
                                             offset=offset, restricted=restricted)
            if setup is not None:
                return cls(setup.design, missing=missing, chunked=setup)
        parsed = parse_formula(formula, restricted=restricted)
        fixed = _check_fixed(fixed, residual)
        design = build_design(parsed, data, missing=missing, weights=weights, offset=offset,
                              extra_columns=residual_columns(residual),
                              marginal=residual is not None,
                              fixed_sigma=bool(fixed))
        return cls(design, missing=missing, residual=residual, fixed=fixed)

    def update(self, formula: str, data: pd.DataFrame | None = None) -> "LinearMixedModel":
        """A new, unfitted model for ``formula`` on the same data and options.

        The data are the rows and columns this model uses (``design.data``), as
        for lme4's ``update(m, formula)`` on a model fitted to complete cases;
        prior weights and the ``offset=`` argument are carried over (by column).
        ``data`` replaces the data (it must have the weights/offset columns).
        """
        d = self.design
        return type(self).from_formula(formula, d.data if data is None else data,
                                       missing=self.missing, weights=d.weights_column,
                                       offset=d.offset_column,
                                       residual=self.residual, restricted=d.formula.restricted,
                                       fixed=self.fixed)

    def refit(self, y: np.ndarray | None = None, method: str = "REML", *,
              start: np.ndarray | None = None, warn: bool = True,
              **kwargs) -> LinearMixedResults:
        """Fit the same design again, optionally with a new response (lme4's ``refit``).

        Parameters
        ----------
        y : array, optional
            New response, one value per row used (e.g. a simulated response for
            the parametric bootstrap).  By default the model's own response.
        method, start, warn, **kwargs
            As for :meth:`fit`.
        """
        unknown = sorted(set(kwargs) - set(_FIT_KEYWORDS))
        if unknown:
            raise ArgumentError(f"refit() got unknown keyword argument(s) "
                                f"{', '.join(map(repr, unknown))}; it takes y, method, "
                                f"{', '.join(_FIT_KEYWORDS)}")
        model = self
        if y is not None:
            try:
                y = np.asarray(y, dtype=float)
            except (TypeError, ValueError):
                raise FitError(f"y must be {self.design.nobs} numbers, not "
                               f"{type(y).__name__}") from None
            if y.shape != self.design.y.shape:
                raise FitError(f"y must have {self.design.nobs} values, not shape {y.shape}")
            if not np.all(np.isfinite(y)):
                raise FitError("y has non-finite values (NaN or inf)")
            design = self.design.full if self.chunked is not None else self.design
            model = type(self)(dataclasses.replace(design, y=y), missing=self.missing,
                               residual=self.residual, fixed=self.fixed)
        return model.fit(method, start=start, warn=warn, **kwargs)

    # ----------------------------------------------------------------- stages
    def deviance_function(self, reml: bool = True) -> ProfiledDeviance:
        """The profiled objective as a closure over ``theta`` (lme4's ``devFunOnly``).

        Built once per criterion and kept: forming the cross-products is the
        only step that touches every row.  With a residual structure it is a
        :class:`~mixedanova.likelihood.residual_fit.ResidualDeviance`, a function
        of ``(theta, u)`` with ``u`` the structure's unconstrained parameters.
        """
        if reml not in self._deviance and self.chunked is not None:
            self._deviance[reml] = self.chunked.deviance_function(reml)
        if reml not in self._deviance:
            from .likelihood.criterion import ProfiledDeviance
            from .likelihood.rows import design_rows

            d = self.design
            rows = design_rows(d)  # weights and offset applied (see likelihood.rows)
            terms, X, y = list(rows.terms), rows.X, rows.y
            if self.marginal:
                from .likelihood.marginal import MarginalCriterion
                self._deviance[reml] = MarginalCriterion(self._structure.data(X, y),
                                                         self._structure.cov, reml=reml)
            elif self._structure is not None:
                self._deviance[reml] = _residual_deviance(terms, d, X, y, reml,
                                                          self._structure)
            else:
                self._deviance[reml] = ProfiledDeviance.from_rows(terms, d.theta_layout(), X,
                                                                   y, reml=reml)
        return self._deviance[reml]

    def weights_constant(self) -> float:
        """``-sum(log w_i)``: what the prior weights add to -2 log-likelihood.

        The engine's criterion is that of the whitened rows; lme4's REML criterion,
        deviance and ``logLik`` also hold the log-determinant of the weight matrix
        (``logLik`` includes ``0.5 * sum(log w_i)``).  :meth:`fit` adds it to the
        reported objective; 0 without weights.
        """
        d = self.design
        if self.chunked is not None:
            return self.chunked.weights_constant()
        return -float(np.sum(np.log(d.weights))) if d.has_weights else 0.0

    def fit(self, method: str = "REML", *, optimizer: str = "SLSQP",
            start: np.ndarray | None = None, ems: str | None = None,
            anova_method: str | None = None, warn: bool = True,
            control: LmmControl | None = None) -> LinearMixedResults:
        """Fit the model.

        Parameters
        ----------
        method : {"REML", "ML", "ANOVA"}
            Restricted or full maximum likelihood, or the method of moments
            (expected mean squares; balanced rules or Henderson's Method III).
        optimizer : str
            scipy method for ``theta`` (see :func:`~mixedanova.likelihood.optimizer.optimize_theta`).
        start : array, optional
            Starting ``theta``.
        ems : {"unrestricted", "restricted"}, optional
            Mixed-model convention for ``method="ANOVA"`` (an error with other
            methods, which have no such choice).  The default is the
            unrestricted model, which is what an lme4 formula states (each
            ``(1|a:b)`` effect is iid) and what REML fits; ``"restricted"`` is the
            textbook model whose random interactions with a fixed factor sum to
            zero over its levels.
        anova_method : {"auto", "rules", "method3"}, optional
            For ``method="ANOVA"``: the balanced EMS rules when the design allows
            (``"auto"``, the default), or Henderson's Method III (Type I sums of squares).
        warn : bool
            Emit one warning when the convergence check finds a problem or the fit
            is singular.
        control : LmmControl, optional
            Optimizer tolerances and iteration limits
            (:class:`~mixedanova.likelihood.control.LmmControl`, lme4's
            ``lmerControl``); the defaults when omitted.  REML / ML only.

        Raises
        ------
        FitError
            An argument the fit cannot use, named in the message: an unknown
            ``method`` or ``optimizer``, a ``start`` that is not one number per
            element of ``theta``, ``ems``/``anova_method`` with a likelihood fit.
        """
        method, optimizer, start = self._check_fit_arguments(method, optimizer, start, ems,
                                                             anova_method, warn)
        if method == "ANOVA" and control is not None:
            raise FitError("control (optimizer settings) does not apply to method='ANOVA'")
        control = check_control(control)
        if method == "ANOVA":
            if self._structure is not None:
                raise DesignError("method='ANOVA' (expected mean squares) assumes independent "
                                  "residuals with one variance; drop residual= or fit by "
                                  "REML / ML")
            return self._fit_moments(ems or "unrestricted", anova_method or "auto")
        if self._cov is not None:
            from .likelihood.structured_fit import fit_structured
            state = fit_structured(self.deviance_function(reml=(method == "REML")), self._cov,
                                   self._held, (self.fixed or {}).get("sigma"), start)
            return self._results(state, warn)
        if self.fixed and "sigma" in self.fixed:
            from .likelihood.fixed_sigma import fit_fixed_sigma
            state = fit_fixed_sigma(self.deviance_function(reml=(method == "REML")),
                                    self.fixed["sigma"], start)
            return self._results(state, warn)
        if self.marginal:
            from .likelihood.visit_structure import marginal_state
            state = marginal_state(self.deviance_function(reml=(method == "REML")),
                                   self._structure, start, control, fixed=self._fixed_index)
            return self._results(state, warn)
        if self._structure is not None:
            res = self._fit_residual(method, optimizer, start, control)
            if warn:
                _warn_once(res)
                _warn_residual_boundary(res)
            return res
        from .likelihood.convergence import check_convergence
        from .likelihood.criterion import fit_state
        from .likelihood.optimizer import optimize_theta
        from .likelihood.threads import engine_threads

        dev = self.deviance_function(reml=(method == "REML"))
        with engine_threads(dev.system):
            opt = optimize_theta(dev, start, method=optimizer, control=control)
            conv = check_convergence(dev, opt.theta, opt.hessian, opt.working, control=control)
            conv = _optimizer_note(conv, opt, control)
            state = fit_state(dev, opt, conv)
        return self._results(state, warn)

    def _results(self, state, warn: bool) -> LinearMixedResults:
        """The results of a likelihood fit: the prior weights' constant added to the
        criterion (see :meth:`weights_constant`), one warning if asked for."""
        if self.design.has_weights:
            state = dataclasses.replace(state,
                                        objective=state.objective + self.weights_constant())
        make = LinearMixedResults if self.chunked is None else self.chunked.results
        res = make(self.design, state, model=self)
        if warn:
            _warn_once(res)
        return res


    def _check_fit_arguments(self, method, optimizer, start, ems, anova_method, warn):
        """Validate :meth:`fit`'s arguments; returns canonical method, optimizer, start."""
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise FitError(f"method must be one of {', '.join(_METHODS)}, not {method!r}")
        method = method.upper()
        canon = {o.lower(): o for o in _OPTIMIZERS}
        if not isinstance(optimizer, str) or optimizer.lower() not in canon:
            raise FitError(f"optimizer must be one of {', '.join(_OPTIMIZERS)} (scipy methods "
                           f"that take bounds), not {optimizer!r}")
        optimizer = canon[optimizer.lower()]
        if method == "ANOVA":
            if ems is not None and ems not in _EMS:
                raise FitError(f"ems must be one of {', '.join(_EMS)}, not {ems!r}")
            if anova_method is not None and anova_method not in _ANOVA_METHODS:
                raise FitError(f"anova_method must be one of {', '.join(_ANOVA_METHODS)}, "
                               f"not {anova_method!r}")
            if start is not None:
                raise FitError("start (a starting theta) does not apply to method='ANOVA'")
        else:
            for name, value in (("ems", ems), ("anova_method", anova_method)):
                if value is not None:
                    raise FitError(f"{name}={value!r} applies to method='ANOVA' only, not to "
                                   f"method={method!r}")
        if not isinstance(warn, (bool, np.bool_)):
            raise FitError(f"warn must be True or False, not {warn!r}")
        if start is not None and self.marginal:
            start = np.asarray(start, dtype=float).ravel()
            if start.size == 0:  # a marginal fit's (empty) theta, e.g. from compare()
                start = None
            elif self._structure is not None and start.size != self._structure.n_par:
                raise FitError(f"start must hold the {self._structure.n_par} covariance "
                               f"parameters ({', '.join(self._structure.names)}), not "
                               f"{start.size} numbers")
        elif start is not None:
            start = self._cov.check_start(start) if self._cov is not None else \
                self.design.theta_layout().check_start(start)
        return method, optimizer, start

    def _fit_residual(self, method: str, optimizer: str, start: np.ndarray | None,
                      control: LmmControl) -> LinearMixedResults:
        """REML / ML fit with a residual structure (nested optimization over
        ``u`` and ``theta``, :func:`~mixedanova.likelihood.residual_state.fit_residual_state`).

        ``start`` may hold ``theta`` or ``(theta, u)``.
        """
        from .likelihood.residual_state import fit_residual_state

        rdev = self.deviance_function(reml=(method == "REML"))
        state = fit_residual_state(rdev, self._structure, optimizer, start, control,
                                   held=self._fixed_index)
        return self._results(state, warn=False)

    def _fit_moments(self, ems: str, anova_method: str) -> "AnovaResults":
        """Method-of-moments fit: EMS table, moment estimates, GLS and BLUPs there."""
        from .likelihood.criterion import state_at_moments
        from .moments.anova_data import AnovaData
        from .moments.anova_design import formula_anova_terms
        from .moments.moments import fit_anova_data
        from .results.anova import AnovaResults

        d = self.design
        fixed, random, intercept = formula_anova_terms(d, d.data.columns)
        # the engine reads the response and the variables' level codes, not the data
        names = dict.fromkeys(v for t in fixed + random for v in t)
        coded = AnovaData(y=d.y, response=d.formula.response.strip(),
                          variables=tuple(d.variable(v) for v in names))
        state = fit_anova_data(coded, fixed, random, intercept=intercept, ems=ems,
                               method=anova_method)
        fs = state_at_moments(self.deviance_function(reml=True), state,
                              [":".join(b.factors) for b in d.blocks])
        return AnovaResults(d, fs, model=self)


def _residual_deviance(terms, design: Design, X: np.ndarray, y: np.ndarray, reml: bool,
                       structure):
    """The criterion over ``(theta, u)``
    (:class:`~mixedanova.likelihood.residual_fit.ResidualDeviance`); refuses
    designs where every random term varies inside the residual groups."""
    from .likelihood.residual_fit import ResidualDeviance

    rdev = ResidualDeviance(terms, design.theta_layout(), X, y, reml, structure)
    if not any(rdev.constant):
        names = ", ".join(repr(b.group) for b in design.blocks)
        raise DesignError(
            f"the residual groups must lie inside the levels of at least one random-effects "
            f"grouping factor ({names}): the residual correlation group has to be nested in "
            "one of them (e.g. AR1 within subject with a (1|subject) term)")
    return rdev


def _check_fixed(fixed, residual) -> dict | None:
    """Validate ``fixed=``: ``{"sigma": value}`` (without ``residual=``), random-effect
    variances and correlations, or a marginal model's visit-covariance parameters, by
    name (the names are checked when the covariance parameters are bound)."""
    if fixed is None or fixed == {}:
        return None
    if not isinstance(fixed, dict):
        raise ArgumentError(f"fixed must be a dict such as {{'sigma': 1.0}}, not {fixed!r}")
    out = {}
    for name, value in fixed.items():
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise ArgumentError(f"fixed[{name!r}] must be a number, not {value!r}") from None
        if not np.isfinite(out[name]):
            raise ArgumentError(f"fixed[{name!r}] must be a finite number, not {value!r}")
    if "sigma" in out:
        if out["sigma"] <= 0:
            raise ArgumentError(f"fixed['sigma'] must be a positive number, not "
                                f"{out['sigma']!r}")
        if residual is not None:
            raise ArgumentError("fixed={'sigma': ...} cannot be combined with residual= so far")
    return out


def _bind_covariance(design: Design, fixed: dict | None, residual):
    """The random terms' covariance parameters and the held ones' positions, when
    a term is structured or ``fixed=`` names random-effect parameters; else
    ``(None, {})`` (the plain theta fit)."""
    others = set(fixed or {}) - {"sigma"}
    if not design.blocks or not (design.structured or (others and residual is None)):
        return None, {}
    if residual is not None:
        raise ArgumentError("structured random-effect covariances cannot be combined with "
                            "residual= so far")
    from .design.covstruct import CovarianceParameters
    cov = CovarianceParameters.for_design(design)
    return cov, cov.bind_fixed(fixed or {})


def _fixed_index(fixed: dict | None, names: tuple[str, ...]) -> dict[int, float]:
    """Positions and values of the structure parameters named in ``fixed``."""
    out = {}
    for name, value in (fixed or {}).items():
        if name not in names:
            raise ArgumentError(f"fixed= names unknown parameter {name!r}; the residual "
                                f"structure's parameters are {', '.join(map(repr, names))}")
        out[names.index(name)] = value
    return out


def _optimizer_note(conv, opt, control: LmmControl):
    """When the check failed and the local optimizer had stopped without success
    (e.g. at ``control.maxiter``), say so next to the check's message."""
    if conv.converged or opt.converged:
        return conv
    note = (f"the optimizer stopped early: {opt.message} (LmmControl maxiter="
            f"{control.maxiter}, tol={control.tol:g})")
    return dataclasses.replace(conv, messages=conv.messages + (note,))


def _warn_residual_boundary(res: LinearMixedResults) -> None:
    from .likelihood.residual_state import boundary_messages

    for msg in boundary_messages(res.state.residual):
        warnings.warn(msg, ConvergenceWarning, stacklevel=user_stacklevel())


def _warn_once(res: LinearMixedResults) -> None:
    msgs = list(res.convergence_messages)
    if msgs:
        warnings.warn("; ".join(msgs), ConvergenceWarning, stacklevel=user_stacklevel())
    elif res.is_singular:
        zero = [f"{g} {v}" for g, v, w, s in
                res.varcomp[["group", "var1", "var2", "sdcor"]].itertuples(index=False)
                if pd.isna(w) and g != "Residual" and s < 1e-4 * max(res.sigma, 1e-300)]
        what = f"the variance of {', '.join(zero)} is estimated as 0" if zero else \
            "a correlation is estimated as +-1"
        warnings.warn(f"boundary (singular) fit: {what}; the random-effects structure "
                      "may be too rich for the data", SingularFitWarning, stacklevel=user_stacklevel())


def lmm(formula: str, data: pd.DataFrame, method: str = "REML", *, missing: str = "drop",
        weights=None, offset=None, residual=None, restricted: bool = False,
        fixed: dict | None = None, **kwargs) -> LinearMixedResults:
    """Fit a linear mixed model given by an lme4 formula.

    Parameters
    ----------
    formula : str
        E.g. ``"yield ~ treat + (1|blend)"``.
    data : pandas.DataFrame or dask.dataframe.DataFrame
        A Dask data frame (e.g. ``dask.dataframe.read_parquet(folder)``) is fitted
        from its partitions' summed cross-products without gathering its rows
        (:mod:`mixedanova.distributed.dask_fit`; REML / ML, ``progress=True`` for
        Dask's progress bar).  A pandas frame of at least 2**21 rows
        (``mixedanova.distributed.frame_fit.CHUNKED_ROWS``) is set up the same way
        on slices of 2**20 rows, without a row-sized design (REML / ML; other fits
        and anything that route refuses use the in-memory design).
    method : {"REML", "ML", "ANOVA"}
    missing : {"drop", "raise"}
        Goes to :meth:`LinearMixedModel.from_formula`.
    weights : str or array, optional
        Prior weights (column name or array; residual variance ``sigma^2 / w``,
        lme4's ``weights =``).
    offset : str or array, optional
        A known term added to the linear predictor (column name or array, lme4's
        ``offset =``); ``offset(col)`` in the formula does the same.
    restricted : bool
        Refuse, before evaluating anything, a formula that uses more than column
        names, numbers, operators and the allow-listed transforms (for formulas
        from untrusted sources; see docs/user_guide/trust.md).  Off by default.
    residual : structure or tuple, optional
        Residual covariance structure (:mod:`mixedanova.residual`).  Without a
        random-effects term in the formula the model is marginal (nlme's ``gls``,
        mmrm), e.g. ``residual=ma.Unstructured(group="USUBJID", time="AVISIT")``.
    fixed : dict, optional
        ``{"sigma": s}`` holds the residual scale at ``s``; random-effect variances
        and correlations are held by ``varcomp``'s names, e.g.
        ``{"Subject: (Intercept)": 625.0}`` (docs/user_guide/covariance_structures.md);
        with ``residual=``, the structure's parameters, e.g. ``{"phi": 0.5}``
        (docs/user_guide/residual.md).  A random-effects
        meta-analysis (metafor's ``rma(yi, vi, method = "REML")``) is
        ``ma.lmm("yi ~ 1 + (1|study)", dat, weights=1 / dat.vi, fixed={"sigma": 1.0})``:
        the residual variances are the known ``vi`` and ``res.varcomp`` gives
        ``tau^2`` (metafor's REML log-likelihood adds ``log|X'X| / 2``).
    **kwargs
        :meth:`LinearMixedModel.fit`'s keyword arguments (``optimizer``, ``start``,
        ``ems``, ``anova_method``, ``warn``, ``control``); any other name is an
        :class:`~mixedanova.errors.ArgumentError`.

    Examples
    --------
    >>> import mixedanova as ma
    >>> res = ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"))
    >>> round(res.reml_criterion, 3)
    1743.628
    """
    if _is_dask_frame(data):  # issue 19: partitions summed on the workers
        if fixed is not None:
            raise ArgumentError("fixed= (held parameters) is not available for a fit on a "
                                "Dask data frame yet; compute() the data and fit in memory")
        from .structured import rewrite_structured  # glmmTMB's us(AVISIT | USUBJID) ...
        formula, structured = rewrite_structured(formula, data._meta)
        if structured is not None:
            if residual is not None:
                raise DesignError(f"{structured.source} cannot be combined with residual=")
            residual = structured
        if residual is not None and not parse_formula(formula).random:
            from .distributed.dask_marginal import lmm_dask_marginal  # mmrm, gls
            return lmm_dask_marginal(formula, data, method, residual=residual,
                                     missing=missing, weights=weights, offset=offset,
                                     restricted=restricted, **kwargs)
        if residual is not None:  # partitions aligned on the residual groups
            from .distributed.dask_residual import lmm_dask_residual
            return lmm_dask_residual(formula, data, method, residual=residual,
                                     missing=missing, weights=weights, offset=offset,
                                     restricted=restricted, **kwargs)
        from .distributed.dask_fit import lmm_dask
        return lmm_dask(formula, data, method, missing=missing, weights=weights,
                        offset=offset, restricted=restricted, **kwargs)
    unknown = sorted(set(kwargs) - set(_FIT_KEYWORDS))
    if "REML" in unknown or "reml" in unknown:
        raise ArgumentError("lmm() has no REML= argument: write method='ML' for lme4's "
                            "REML = FALSE (method='REML' is the default)")
    if unknown:
        raise ArgumentError(
            f"lmm() got unknown keyword argument(s) {', '.join(map(repr, unknown))}; it takes "
            f"formula, data, method, missing, weights, offset, residual, restricted, fixed, "
            f"{', '.join(_FIT_KEYWORDS)}")
    chunks = not (isinstance(method, str) and method.upper() == "ANOVA")
    return LinearMixedModel.from_formula(formula, data, missing=missing, weights=weights,
                                         offset=offset, residual=residual, restricted=restricted,
                                         fixed=fixed, chunks=chunks).fit(method, **kwargs)


_FIT_KEYWORDS = ("optimizer", "start", "ems", "anova_method", "warn", "control")


def _is_dask_frame(data) -> bool:
    """A ``dask.dataframe.DataFrame``, recognized without importing dask."""
    mod = type(data).__module__ or ""
    return mod.split(".")[0] in ("dask", "dask_expr") and hasattr(data, "to_delayed")
