"""Results of a linear mixed model fit: numbers as pandas objects.

:class:`LinearMixedResults` is built from a :class:`~mixedanova.design.build.Design`
and an engine's :class:`~mixedanova.likelihood.state.FitState`; every attribute is
derived from those two (cached on first use), nothing is filled in afterwards.
Printing lives in :mod:`mixedanova.report.summary`.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..design import Design
from ..errors import ArgumentError, UnknownNameError
from ..design.formula import same_group
from ..design.theta import SINGULAR_TOL
from ..likelihood.state import FitState
from .residual_view import ResidualStructureMixin
from .workflow import WorkflowMixin

if TYPE_CHECKING:  # pragma: no cover
    from ..report.summary import Summary

__all__ = ["LinearMixedResults", "GroupDict"]


class GroupDict(dict):
    """A dict keyed by grouping factor that also accepts the factors in another
    order (``"batch:sample"`` for lme4's ``"sample:batch"``) and names the
    grouping factors when a key is unknown."""

    def __missing__(self, key):
        for g in self:
            if isinstance(key, str) and same_group(key, g):
                return self[g]
        raise UnknownNameError(f"no grouping factor {key!r}; the grouping factors are "
                       f"{', '.join(map(repr, self))}")


class LinearMixedResults(ResidualStructureMixin, WorkflowMixin):
    """A fitted linear mixed model.

    Attributes are computed from the design and the engine's fit state; the
    methods and properties below are the list.  Names follow formulaic for the fixed effects
    and lme4 for the random effects (``"(Intercept)"``).

    Parameters
    ----------
    design : Design
    state : FitState
        The engine's estimates.
    model : LinearMixedModel
        The model that produced the fit; inference that needs the deviance
        function or more fits (Satterthwaite df, profile and bootstrap intervals,
        ML refits, reduced models) asks it, as lme4 does.
    """

    def __init__(self, design: Design, state: FitState, model) -> None:
        self.design = design
        self.state = state
        self.model = model

    # ------------------------------------------------------------------ basics
    @property
    def method(self) -> str:
        """``"REML"``, ``"ML"`` or ``"ANOVA"``."""
        return self.state.method

    @property
    def nobs(self) -> int:
        """Number of observations used (after dropping missing values)."""
        return self.design.nobs

    @property
    def n_dropped(self) -> int:
        """Rows dropped because of missing values in used columns."""
        return self.design.n_dropped

    @property
    def ngroups(self) -> dict[str, int]:
        """Levels per grouping factor (either spelling of a nested group works as a key)."""
        return GroupDict(self.design.ngroups)

    @property
    def theta(self) -> np.ndarray:
        """Relative covariance parameters in lme4's order (``getME(m, "theta")``)."""
        return self.state.theta.copy()

    @cached_property
    def theta_names(self) -> tuple[str, ...]:
        """lme4's names of ``theta``."""
        return self.design.theta_layout().names

    @property
    def sigma(self) -> float:
        """Residual standard deviation."""
        return float(self.state.sigma)

    @property
    def converged(self) -> bool:
        """False when the convergence check found a problem."""
        conv = self.state.convergence
        return True if conv is None else conv.converged

    @property
    def is_singular(self) -> bool:
        """A variance on its boundary (lme4's ``isSingular``)."""
        conv = self.state.convergence
        if conv is not None:
            return conv.is_singular
        diag = self.design.theta_layout().diagonal_mask()
        return bool(np.any(self.state.theta[diag] < SINGULAR_TOL))

    @property
    def convergence_messages(self) -> tuple[str, ...]:
        """Problems found by the convergence check (empty if none)."""
        conv = self.state.convergence
        return () if conv is None else conv.messages

    @property
    def optimizer(self):
        """The optimizer summary (method, evaluations, time)."""
        return self.state.optimizer

    # ---------------------------------------------------------- fixed effects
    @cached_property
    def fe_params(self) -> pd.Series:
        """Fixed-effect estimates indexed by formulaic's column names."""
        return pd.Series(self.state.beta, index=list(self.design.x_names), name="estimate")

    @cached_property
    def cov_fe(self) -> pd.DataFrame:
        """Covariance matrix of the fixed effects (``vcov(m)``)."""
        names = list(self.design.x_names)
        return pd.DataFrame(self.state.vcov_beta, index=names, columns=names)

    @cached_property
    def bse_fe(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.state.vcov_beta)),
                         index=list(self.design.x_names), name="std_err")

    # -------------------------------------------------------- variance components
    def _templates(self) -> list[np.ndarray]:
        return self.design.theta_layout().templates(self.state.theta)

    @cached_property
    def varcomp(self) -> pd.DataFrame:
        """Variance components: the rows of lme4's ``as.data.frame(VarCorr(m))``.

        Columns ``group, var1, var2, vcov, sdcor``: per term its variances
        (``var2`` NaN, ``sdcor`` the SD), then its covariances (``sdcor`` the
        correlation); ``Residual`` last.
        """
        rows = []
        s2 = self.sigma ** 2
        for b, name, T in zip(self.design.blocks, self.design.group_names, self._templates()):
            cov = s2 * T @ T.T
            sd = np.sqrt(np.diag(cov))
            for i in range(b.q):
                rows.append((name, b.columns[i], np.nan, cov[i, i], sd[i]))
            for i in range(b.q):
                for j in range(i + 1, b.q):
                    denom = sd[i] * sd[j]
                    corr = cov[j, i] / denom if denom > 0 else float("nan")
                    rows.append((name, b.columns[i], b.columns[j], cov[j, i], corr))
        rows.append(("Residual", np.nan, np.nan, s2, self.sigma))
        for name, value in self.residual_params.items():
            rows.append(("Residual", name, np.nan, float("nan"), float(value)))
        cols = list(zip(*rows))
        # names as object columns; a missing name is NaN (lme4's NA; pd.isna finds it)
        return pd.DataFrame({
            "group": pd.Series(cols[0], dtype=object), "var1": pd.Series(cols[1], dtype=object),
            "var2": pd.Series(cols[2], dtype=object),
            "vcov": np.asarray(cols[3], dtype=float), "sdcor": np.asarray(cols[4], dtype=float)})

    # ------------------------------------------------------------ random effects
    @cached_property
    def _blups(self) -> list[np.ndarray]:
        """``b = Lambda u`` per term as ``(nlev, q)`` arrays."""
        out, pos = [], 0
        for b, T in zip(self.design.blocks, self._templates()):
            u = self.state.u[pos:pos + b.nlev * b.q].reshape(b.nlev, b.q)
            out.append(u @ T.T)
            pos += b.nlev * b.q
        return out

    def _by_group(self, per_term: list[np.ndarray]) -> "GroupDict":
        frames: dict[str, list[pd.DataFrame]] = {}
        for b, vals in zip(self.design.blocks, per_term):
            frames.setdefault(b.group, []).append(
                pd.DataFrame(vals, index=b.levels, columns=list(b.columns)))
        return GroupDict({g: pd.concat(fs, axis=1) for g, fs in frames.items()})

    @cached_property
    def random_effects(self) -> dict[str, pd.DataFrame]:
        """BLUPs (conditional modes) per grouping factor: ``ranef(m)``."""
        return self._by_group(self._blups)

    @cached_property
    def random_effects_cov(self) -> list[np.ndarray]:
        """Conditional covariance ``(nlev, q, q)`` of each term's random effects.

        As lme4's ``ranef(m, condVar = TRUE)``: ``sigma^2 T (Lambda'Z'Z Lambda + I)^{-1} T'``
        per level, conditional on the estimated fixed effects.
        """
        diag = self.state.factor.omega_inv_diag()
        s2 = self.sigma ** 2
        return [s2 * T @ D @ T.T for T, D in zip(self._templates(), diag)]

    @cached_property
    def random_effects_sd(self) -> dict[str, pd.DataFrame]:
        """Conditional SDs of the BLUPs, shaped like :attr:`random_effects`."""
        sds = [np.sqrt(np.diagonal(c, axis1=1, axis2=2)) for c in self.random_effects_cov]
        return self._by_group(sds)

    # ------------------------------------------- matrices at the estimates (issue 13)
    def G(self, max_cells: int | None = None) -> pd.DataFrame:
        """``Var(b)`` at the estimates, labelled like ``design.Z``'s columns (small models).

        ``max_cells`` bounds the dense matrix (default 4e6 entries; larger is a
        :class:`~mixedanova.errors.DesignError`).
        """
        from ..design.matrices import g_matrix
        return g_matrix(self.design, self._templates(), self.sigma, max_cells)

    def R(self, max_cells: int | None = None) -> pd.DataFrame:
        """``Var(e)`` at the estimates, rows and columns the data's rows.

        ``sigma^2 I`` for independent residuals (``sigma^2 / w_i`` on the diagonal
        with prior weights); with a residual structure ``sigma^2 S Rrel S``, ``Rrel``
        the structure's correlation and variance function at the estimates and
        ``S = diag(1 / sqrt(w))``.
        """
        from ..design.matrices import check_size, r_matrix
        if self.state.residual is None:
            return r_matrix(self.design, self.sigma, max_cells)
        n = self.design.nobs
        check_size(n, n, "R", max_cells)
        idx = self.design.row_index
        return pd.DataFrame(self._structured_r(), index=idx, columns=idx)

    def _structured_r(self) -> np.ndarray:
        """Dense ``sigma^2 S Rrel S`` over all rows (a residual structure is fitted)."""
        d = self.design
        r = self.residual_covariance(np.arange(d.nobs)).to_numpy()
        if d.has_weights:
            s = 1.0 / np.sqrt(np.asarray(d.weights, dtype=float))
            r = s[:, None] * r * s[None, :]
        return r

    def V(self, max_cells: int | None = None) -> pd.DataFrame:
        """``Var(y) = Z G Z' + R`` at the estimates (small models; ``R`` as in :meth:`R`)."""
        from ..design.matrices import v_matrix
        v = v_matrix(self.design, self._templates(), self.sigma, max_cells)
        if self.state.residual is None:
            return v
        d = self.design
        w = np.asarray(d.weights, dtype=float) if d.has_weights else np.ones(d.nobs)
        # v_matrix adds the independent sigma^2 / w; swap it for the structured R
        zgz = v.to_numpy() - np.diag(self.sigma ** 2 / w)
        return pd.DataFrame(zgz + self._structured_r(), index=v.index, columns=v.columns)

    # -------------------------------------------------------- fitted, residuals
    def _random_part(self, codes_list, zraw_list) -> np.ndarray:
        total = 0.0
        for b_vals, codes, zraw in zip(self._blups, codes_list, zraw_list):
            vals = np.where(codes[:, None] >= 0, b_vals[np.maximum(codes, 0)], 0.0)
            total = total + np.einsum("ij,ij->i", zraw, vals)
        return total

    @cached_property
    def fittedvalues(self) -> pd.Series:
        """Conditional fitted values ``X b + Z b + offset`` for the rows used."""
        d = self.design
        fit = d.X @ self.state.beta + d.offset_values + self._random_part(
            [b.codes for b in d.blocks], [b.zraw for b in d.blocks])
        return pd.Series(fit, index=d.row_index, name="fitted")

    @cached_property
    def resid(self) -> pd.Series:
        """Conditional residuals ``y - fitted``."""
        return pd.Series(self.design.y - self.fittedvalues.to_numpy(),
                         index=self.design.row_index, name="resid")

    # ------------------------------------------------------------- criteria
    @property
    def npar(self) -> int:
        """Number of parameters: fixed effects, theta, sigma and the residual
        structure's parameters."""
        fit = self.state.residual
        # sigma counts unless held fixed or absent (a marginal model's covariance has it)
        free_sigma = self.state.fixed_sigma is None and not getattr(
            getattr(fit, "structure", None), "marginal", False)
        free_u = None if fit is None else getattr(fit.info.get("marginal"), "free",
                                                  fit.info.get("free"))  # held: fixed=
        n_u = 0 if fit is None else len(fit.u) if free_u is None else int(np.sum(free_u))
        sf = getattr(self.state, "structured", None)  # structured terms: the free ones
        n_theta = len(self.state.theta) if sf is None else sf.n_free
        return self.design.p + n_theta + int(free_sigma) + n_u

    @property
    def llf(self) -> float:
        """Log-likelihood (restricted for REML fits), as ``logLik(m)``."""
        return -0.5 * self.state.objective

    @property
    def reml_criterion(self) -> float:
        """``-2 llf`` of a REML fit (``REMLcrit(m)``); NaN for ML fits."""
        return self.state.objective if self.method != "ML" else float("nan")

    @property
    def deviance(self) -> float:
        """``-2 llf`` of an ML fit (``deviance(m)``); NaN for REML fits."""
        return self.state.objective if self.method == "ML" else float("nan")

    @property
    def aic(self) -> float:
        """``AIC(m)``."""
        return -2.0 * self.llf + 2.0 * self.npar

    @property
    def bic(self) -> float:
        """``BIC(m)``."""
        return -2.0 * self.llf + math.log(self.nobs) * self.npar

    @property
    def df_resid(self) -> int:
        """``nobs - npar``, as lme4's ``df.resid``."""
        return self.nobs - self.npar

    # ------------------------------------------------- inference (issue 4)
    # Thin delegations; the computations live in mixedanova.inference & co.
    @cached_property
    def _inference(self):
        """Cached df machinery (:class:`mixedanova.inference.tables.FixedInference`)."""
        from ..inference.tables import FixedInference
        return FixedInference(self)

    def fixed(self, ddf: str = "satterthwaite", level: float = 0.95) -> pd.DataFrame:
        """Fixed-effects table with df, p values and confidence limits.

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "residual", "none"}
            Satterthwaite (lmerTest's ``summary(m)``), Kenward-Roger (REML fits;
            ``summary(m, ddf = "Kenward-Roger")``: the SE comes from the adjusted
            covariance), ``n - p`` df, or none (``t`` holds z, normal p values).
        level : float
            Level of ``ci_low``/``ci_high`` (t quantile with the column's df).

        Returns
        -------
        pandas.DataFrame
            Indexed like :attr:`fe_params`; columns ``estimate, std_err, df, t, p,
            ci_low, ci_high``; prints every column within 80 characters, df
            rounded for display.

        Examples
        --------
        >>> import mixedanova as ma
        >>> res = ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"))
        >>> res.fixed()[["estimate", "std_err", "df"]].round(2)   # lmerTest: summary(m)
                   estimate  std_err    df
        Intercept    251.41     6.82  17
        Days          10.47     1.55  17
        """
        from ..report.tables import report_table

        return report_table(self._inference.fixed_table(ddf, level))

    def anova(self, type: int | str = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F tests of the fixed terms: lmerTest's ``anova(m, type, ddf)``.

        Parameters
        ----------
        type : {1, 2, 3}
            Sequential, type II (containment) or type III hypotheses; type III is
            valid whatever contrasts the formula uses.
        ddf : {"satterthwaite", "kenward-roger", "residual", "none"}

        Returns
        -------
        pandas.DataFrame
            Indexed by term; columns ``sum_sq, mean_sq, num_df, den_df, F, p``.
            Printing shows the heading; ``.hypotheses`` holds each term's L
            (``attrs`` stay scalars, so that tables concatenate).

        Examples
        --------
        >>> import mixedanova as ma
        >>> res = ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"))
        >>> res.anova(type=3)[["num_df", "den_df", "F"]].round(2)   # lmerTest: anova(m)
        Type III Analysis of Variance Table with Satterthwaite's method
              num_df den_df      F
        term
        Days       1     17  45.85
        """
        return self._inference.anova(type, ddf)

    def contrast(self, L, ddf: str = "satterthwaite", rhs=0.0, level: float = 0.95):
        """Test of the estimable function ``L beta = rhs`` (lmerTest's ``contest``).

        Parameters
        ----------
        L : array, Series, dict or DataFrame
            One row (t test) or several (F test) over the fitted coefficients, or
            over all formula columns including dropped aliased ones (then each row
            must be estimable, else :class:`~mixedanova.inference.tables.EstimabilityError`).
            Series/dict/DataFrame are keyed by coefficient name.
        ddf : {"satterthwaite", "kenward-roger", "residual", "none"}
        rhs : float or array
        level : float
            Confidence level of the t test's interval.

        Returns
        -------
        mixedanova.inference.tables.ContrastResult
            ``estimate, std_err, statistic, num_df, df, p`` (``.to_frame()``).
        """
        return self._inference.contrast(L, ddf, rhs=rhs, level=level)

    def conf_int(self, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
        """Confidence intervals, as lme4's ``confint(m, method = ...)``.

        ``method`` is ``"wald"`` (fixed effects only), ``"profile"`` (ML deviance
        by default, as lme4; ``criterion="REML"`` for the REML profile of the
        variance parameters) or ``"boot"`` (parametric bootstrap; ``n_boot``,
        ``seed``).  ``parm`` selects ``"fixed"``, ``"random"`` or named parameters.
        See :func:`mixedanova.inference.intervals.conf_int`.
        """
        from ..inference.intervals import conf_int
        unknown = sorted(set(kwargs) - {"parm", "criterion", "n_boot", "seed"})
        if unknown:
            raise ArgumentError(f"conf_int() got unknown keyword argument(s) "
                                f"{', '.join(map(repr, unknown))}; it takes method, level, "
                                "parm, criterion, n_boot, seed")
        return conf_int(self, method, level, **kwargs)

    def ranova(self, reduce_terms: bool = True) -> pd.DataFrame:
        """Likelihood-ratio tests for the random terms (lmerTest's ``ranova(m)``).

        See :func:`mixedanova.inference.compare.ranova`.
        """
        from ..inference.compare import ranova
        return ranova(self, reduce_terms=reduce_terms)

    def profile(self, parm=None, *, criterion: str = "ML", level: float = 0.99,
                npoints: int = 8) -> pd.DataFrame:
        """Profile zeta on a grid (lme4's ``profile(m)``); see
        :func:`mixedanova.inference.profile.profile_zeta`."""
        from ..inference.profile import profile_zeta
        return profile_zeta(self, parm, criterion=criterion, level=level, npoints=npoints)

    # ------------------------------------------------------------------ plots
    def plot_ranef(self, group: str | None = None, level: float = 0.95, **kwargs):
        """Caterpillar plot of the BLUPs with conditional-SD intervals (a matplotlib
        Figure); see :func:`mixedanova.report.plots.plot_ranef`."""
        from ..report.plots import plot_ranef
        return plot_ranef(self, group=group, level=level, **kwargs)

    def plot_resid(self, **kwargs):
        """Residuals vs fitted and normal QQ plots of residuals and BLUPs (a Figure);
        see :func:`mixedanova.report.plots.plot_resid`."""
        from ..report.plots import plot_resid
        return plot_resid(self, **kwargs)

    def plot_profile(self, parm=None, *, criterion: str = "ML", level: float = 0.99,
                     npoints: int = 8, profile: pd.DataFrame | None = None):
        """Profile zeta plots (lme4's ``xyplot(profile(m))``), a Figure.

        ``profile`` reuses a table from :meth:`profile`; otherwise it is computed
        (one constrained fit per grid point).
        """
        from ..report.plots import plot_profile
        if profile is None:
            profile = self.profile(parm, criterion=criterion, level=level, npoints=npoints)
        return plot_profile(profile)

    # --------------------------------------------------------------- printing
    def _fixed_table(self) -> pd.DataFrame:
        """Fixed-effects table of the summary.

        REML and ML fits show lmerTest's columns (Satterthwaite df and p values,
        ``attrs["ddf_method"] == "Satterthwaite"``); other fits the Wald t only.
        """
        est, se = self.fe_params, self.bse_fe
        if self.method in ("REML", "ML") and len(est):
            from ..report.summary import signif_stars
            try:
                tab = self.fixed("satterthwaite")
            except (ArithmeticError, ValueError, np.linalg.LinAlgError):
                tab = None
            if tab is not None:
                out = pd.DataFrame({"Estimate": tab["estimate"], "Std. Error": tab["std_err"],
                                    "df": tab["df"], "t value": tab["t"],
                                    "Pr(>|t|)": tab["p"],
                                    "": [signif_stars(v) for v in tab["p"]]})
                out.attrs["ddf_method"] = "Satterthwaite"
                return out
        return pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": est / se})

    def _summary_parts(self) -> dict:
        method = self.method
        if method == "ANOVA":
            title = "Linear mixed model fit by the method of moments (ANOVA)"
        else:
            title = f"Linear mixed model fit by {'REML' if method == 'REML' else 'maximum likelihood'}"
        fixed = self._fixed_table()
        if fixed.attrs.get("ddf_method"):
            title += f". t-tests use {fixed.attrs['ddf_method']}'s method"
        if method == "ML":
            criteria = {"AIC": self.aic, "BIC": self.bic, "logLik": self.llf,
                        "deviance": self.deviance, "df.resid": self.df_resid}
        else:
            criteria = {"REML criterion at convergence": self.state.objective}
        scaled = self.residuals("scaled").to_numpy()
        quant = pd.Series(np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0]),
                          index=["Min", "1Q", "Median", "3Q", "Max"])
        notes = []
        if self.n_dropped:
            notes.append(f"{self.n_dropped} observation{'s' if self.n_dropped > 1 else ''} "
                         "deleted due to missing values")
        if self.design.dropped_columns:
            notes.append("fixed-effect model matrix is rank deficient; dropped: "
                         + ", ".join(self.design.dropped_columns))
        if self.is_singular:
            notes.append("boundary (singular) fit: a variance is estimated as 0 or a "
                         "correlation as +-1")
        notes.extend(self.convergence_messages)
        sf = getattr(self.state, "structured", None)
        if sf is not None:  # structured random terms / held parameters (issue 21)
            notes.extend(sf.describe(self.sigma))
        vc = self.varcomp
        extra = []
        if len(self.residual_params):
            vc = vc[~((vc["group"] == "Residual") & vc["var1"].notna())]
            rp = self.residual_params
            width = max(len(str(k)) for k in rp.index)
            text = "\n".join(f" {str(k):<{width}}  {v:.6g}" for k, v in rp.items())
            extra.append((f"Residual structure: {' + '.join(self.residual_structure)}", text))
        V = np.asarray(self.state.vcov_beta, dtype=float)
        sd = np.sqrt(np.diag(V)) if V.size else np.zeros(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            C = V / np.outer(sd, sd) if V.size else V
        names = list(fixed.index)
        fixed_corr = pd.DataFrame(C, index=names, columns=names)
        return dict(title=title, formula=self.design.formula.formula, criteria=criteria,
                    residual_quantiles=quant, random=vc, nobs=self.nobs,
                    ngroups=self.ngroups, fixed=fixed, notes=notes, extra=extra,
                    fixed_corr=fixed_corr)

    def summary(self, correlation: bool = False) -> "Summary":
        """The lme4-style report; ``print()`` it or read its tables.

        Parameters
        ----------
        correlation : bool
            Add lme4's "Correlation of Fixed Effects" block
            (``print(summary(m), correlation = TRUE)``).

        Examples
        --------
        >>> import mixedanova as ma
        >>> res = ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"))
        >>> print(res.summary())          # doctest: +ELLIPSIS
        Linear mixed model fit by REML...
        REML criterion at convergence: 1743.6283
        ...
        Fixed effects:
                    Estimate Std. Error      df t value Pr(>|t|)
        (Intercept) 251.4051     6.8246 17.0000 36.8383 < 2e-16 ***
        ...
        >>> html = res.summary().as_html()   # styled tables for Jupyter or a web page
        """
        from ..report.summary import Summary
        return Summary.from_results(self, correlation=correlation)

    def _repr_html_(self) -> str:
        """Jupyter display: the summary as HTML tables."""
        return self.summary().as_html()

    def __repr__(self) -> str:
        return (f"<LinearMixedResults {self.method}: {self.design.formula.formula!r}, "
                f"nobs={self.nobs}>")

    def __str__(self) -> str:
        return str(self.summary())

