"""Results of a generalized linear mixed model (:func:`mixedanova.glmm`).

Names follow lme4: ``llf`` is ``logLik(m)`` on the Laplace scale (binomial
coefficients and ``log(y!)`` included, also for ``nAGQ > 1``, where lme4 leaves
the saturated log-likelihood out), ``minus_2_loglik`` is what ``summary(m)``
prints as "deviance", and :attr:`GlmmResults.deviance` is ``deviance(m)``: the
*conditional* deviance (the sum of squared deviance residuals at the modes).
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..design.build import Design
from ..design.theta import SINGULAR_TOL
from ..errors import ArgumentError
from .glmm_inference import GlmmWorkflowMixin
from .lmm import GroupDict

if TYPE_CHECKING:  # pragma: no cover
    from ..glmm.families import Family
    from ..glmm.fit import GlmmFit
    from ..glmm.dispersion import ParamFit
    from ..glmm.laplace import GlmmData, LaplaceObjective
    from ..glmm.separation import SeparationReport

__all__ = ["GlmmResults"]


class GlmmResults(GlmmWorkflowMixin):
    """A fitted GLMM.

    Parameters
    ----------
    design : Design
    family : Family
    data : GlmmData
        The numbers the engine saw (proportions and trials for a binomial response).
    fit : GlmmFit
    nagq : int
    x_names : tuple of str
        Fixed-effect names (R's ``I(age^2)`` kept).
    response : str
        The response as written.
    objective : LaplaceObjective
    agq : AgqObjective or None
    formula : str
        The formula as the user wrote it.
    model : GlmmModel, optional
        The call that produced the fit (for refits: null model, bootstrap).
    param_fit : ParamFit or None
        The estimation of the dispersion (Gamma, inverse Gaussian) or NB shape.
    separation : SeparationReport or None
        The separation check (binomial; counts with a log link).
    """

    def __init__(self, *, design: Design, family: "Family", data: "GlmmData", fit: "GlmmFit",
                 nagq: int, x_names: tuple[str, ...], response: str,
                 objective: "LaplaceObjective", agq=None, formula: str = "",
                 model=None, param_fit: "ParamFit | None" = None,
                 separation: "SeparationReport | None" = None) -> None:
        self.design = design
        self.family = family
        self.data = data
        self.fit = fit
        self.nagq = nagq
        self.x_names = x_names
        self.response = response
        self.objective = objective
        self.agq = agq
        self.formula = formula
        self.model = model
        self.param_fit = param_fit
        self.separation = separation

    # ------------------------------------------------------------ basics
    @property
    def nobs(self) -> int:
        """Number of observations used (``nobs(m)``)."""
        return self.design.nobs

    @property
    def ngroups(self) -> dict[str, int]:
        """Levels per grouping factor (``ngrps(m)``)."""
        return self.design.ngroups

    @property
    def theta(self) -> np.ndarray:
        """lme4's ``getME(m, "theta")``."""
        return self.fit.theta

    @property
    def theta_names(self) -> tuple[str, ...]:
        """Names of ``theta``'s entries, in lme4's order."""
        return self.design.theta_layout().names

    @property
    def converged(self) -> bool:
        """The optimizer's verdict, False also when a fixed-effect estimate is
        infinite (separation) or the dispersion / shape is at its search limit
        or not at a minimum of the joint Hessian."""
        sep = self.separation is not None and self.separation.separated
        bound = self.param_fit is not None and bool(self.param_fit.messages)
        return self.fit.converged and not sep and not bound

    @property
    def convergence_messages(self) -> tuple[str, ...]:
        """What the convergence checks found (the optimizer's, the dispersion / NB
        shape's, separation); empty when converged."""
        out = list(self.fit.messages)
        if self.param_fit is not None:
            out += self.param_fit.messages
        if self.separation is not None and self.separation.message:
            out.append(self.separation.message)
        return tuple(out)

    @property
    def estimated_param(self) -> bool:
        """The family's dispersion / shape was estimated (one more parameter)."""
        return self.family.has_param and not self.family.fixed_param

    @property
    def unit_family(self) -> "Family":
        """The family at unit dispersion (Gamma, inverse Gaussian): R's ``variance``
        and ``dev.resids``, so that :meth:`resid` and :attr:`deviance` are R's
        unscaled ones (``residuals(m)``, ``deviance(m)``); the family itself
        otherwise."""
        if self.family.name in ("gamma", "inverse_gaussian"):
            return self.family.with_param(1.0)
        return self.family

    @property
    def nb_shape(self) -> float | None:
        """The negative binomial shape (R's ``theta``: ``getME(m, "glmer.nb.theta")``,
        glmmTMB's ``sigma(m)`` for ``nbinom2``); None for other families."""
        return float(self.family.param) if self.family.name == "negative_binomial" else None

    @property
    def dispersion(self) -> float:
        """The dispersion ``phi`` (``Var(y) = phi V(mu)``; 1 for binomial, Poisson
        and NB): for Gamma ``phi = 1 / shape`` (glmmTMB's ``sigma(m)^2``)."""
        return self.family.phi

    @property
    def sigma(self) -> float:
        """``sqrt(dispersion)`` (glmmTMB's ``sigma(m)`` for Gamma: the coefficient of
        variation; 1 for binomial and Poisson; for NB the shape, as glmmTMB)."""
        if self.family.name == "negative_binomial":
            return float(self.family.param)
        return math.sqrt(self.family.phi)

    @property
    def is_singular(self) -> bool:
        """A template diagonal below lme4's ``isSingular`` tolerance 1e-4."""
        diag = self.design.theta_layout().diagonal_mask()
        return bool(np.any(self.theta[diag] < SINGULAR_TOL))

    @property
    def fe_params(self) -> pd.Series:
        """Fixed effects ``fixef(m)``."""
        return pd.Series(self.fit.beta, index=list(self.x_names), name="estimate")

    @property
    def cov_fe(self) -> pd.DataFrame:
        """``vcov(m)``: the ``beta`` block of twice the inverse Hessian of
        ``-2 log L`` over ``(theta, beta)`` (lme4's ``use.hessian = TRUE``)."""
        names = list(self.x_names)
        return pd.DataFrame(self.fit.vcov_beta, index=names, columns=names)

    @property
    def cov_fe_joint(self) -> pd.DataFrame:
        """``vcov`` with the dispersion / NB shape's uncertainty included (the
        ``beta`` block of the inverse Hessian over ``(theta, beta, log a)``, as
        glmmTMB); :attr:`cov_fe` when the family has no estimated parameter."""
        pf = self.param_fit
        if pf is None or pf.vcov_beta_joint is None:
            return self.cov_fe
        names = list(self.x_names)
        return pd.DataFrame(pf.vcov_beta_joint, index=names, columns=names)

    @property
    def bse_fe(self) -> pd.Series:
        """Standard errors of the fixed effects (``sqrt(diag(vcov(m)))``)."""
        return pd.Series(np.sqrt(np.diag(self.fit.vcov_beta)), index=list(self.x_names),
                         name="std_err")

    # ------------------------------------------------------------ likelihood
    @property
    def minus_2_loglik(self) -> float:
        """``-2 logLik(m)`` (Laplace, or AGQ with ``nAGQ`` nodes)."""
        return self.fit.value

    @property
    def llf(self) -> float:
        """``logLik(m)`` on the Laplace scale (all ``nAGQ``)."""
        return -0.5 * self.fit.value

    @property
    def npar(self) -> int:
        """Parameters: theta, beta, and the estimated dispersion / NB shape."""
        return len(self.theta) + len(self.fit.beta) + int(self.estimated_param)

    @property
    def aic(self) -> float:
        """``AIC(m)``: ``-2 logLik + 2 npar``."""
        return self.fit.value + 2.0 * self.npar

    @property
    def bic(self) -> float:
        """``BIC(m)``: ``-2 logLik + log(nobs) npar``."""
        return self.fit.value + math.log(self.nobs) * self.npar

    @property
    def df_resid(self) -> int:
        """``df.residual(m)``: ``nobs - npar``."""
        return self.nobs - self.npar

    @property
    def deviance(self) -> float:
        """``deviance(m)``: the conditional deviance at the modes (not ``-2 logLik``)."""
        d = self.data
        return float(np.sum(self.unit_family.dev_resids(d.y, self.fit.state.mu, d.pw)))

    def objective_at(self, theta, beta) -> float:
        """The objective this fit minimized (Laplace or AGQ ``-2 log L``) at given
        ``theta`` and ``beta`` (lme4's order and names)."""
        f = self.agq if self.agq is not None else self.objective
        return float(f(np.asarray(theta, float), np.asarray(beta, float)))

    def lrt(self, *others: "GlmmResults") -> pd.DataFrame:
        """Likelihood-ratio tests of nested fits (lme4's ``anova(m0, m1)``): the older
        spelling of :meth:`compare`."""
        return self.compare(*others)

    # ------------------------------------------------------------ random effects
    def _templates(self) -> list[np.ndarray]:
        return self.design.theta_layout().templates(self.theta)

    @cached_property
    def varcomp(self) -> pd.DataFrame:
        """``as.data.frame(VarCorr(m))``: ``group, var1, var2, vcov, sdcor`` (no
        residual row: the scale of binomial and Poisson models is 1)."""
        rows = []
        for b, name, T in zip(self.design.blocks, self.design.group_names, self._templates()):
            cov = T @ T.T
            sd = np.sqrt(np.diag(cov))
            for i in range(b.q):
                rows.append((name, b.columns[i], np.nan, cov[i, i], sd[i]))
            for i in range(b.q):
                for j in range(i + 1, b.q):
                    denom = sd[i] * sd[j]
                    rows.append((name, b.columns[i], b.columns[j], cov[j, i],
                                 cov[j, i] / denom if denom > 0 else float("nan")))
        cols = list(zip(*rows))
        return pd.DataFrame({
            "group": pd.Series(cols[0], dtype=object), "var1": pd.Series(cols[1], dtype=object),
            "var2": pd.Series(cols[2], dtype=object),
            "vcov": np.asarray(cols[3], dtype=float), "sdcor": np.asarray(cols[4], dtype=float)})

    @cached_property
    def _modes(self) -> list[np.ndarray]:
        out, pos = [], 0
        u = self.fit.state.u
        for b, T in zip(self.design.blocks, self._templates()):
            out.append(u[pos:pos + b.nlev * b.q].reshape(b.nlev, b.q) @ T.T)
            pos += b.nlev * b.q
        return out

    def _by_group(self, per_term: list[np.ndarray]) -> GroupDict:
        frames: dict[str, list[pd.DataFrame]] = {}
        for b, vals in zip(self.design.blocks, per_term):
            frames.setdefault(b.group, []).append(
                pd.DataFrame(vals, index=b.levels, columns=list(b.columns)))
        return GroupDict({g: pd.concat(fs, axis=1) for g, fs in frames.items()})

    @cached_property
    def random_effects(self) -> GroupDict:
        """Conditional modes ``ranef(m)`` per grouping factor."""
        return self._by_group(self._modes)

    @cached_property
    def random_effects_cov(self) -> list[np.ndarray]:
        """``T (Lambda'Z'WZ Lambda + I)^{-1} T'`` per level (``ranef(m, condVar=TRUE)``)."""
        diag = self.fit.state.factor.omega_inv_diag()
        return [T @ D @ T.T for T, D in zip(self._templates(), diag)]

    @cached_property
    def random_effects_sd(self) -> GroupDict:
        """Conditional SDs of the modes, shaped like :attr:`random_effects`."""
        return self._by_group([np.sqrt(np.diagonal(c, axis1=1, axis2=2))
                               for c in self.random_effects_cov])

    # ------------------------------------------------------------ fitted values
    @property
    def linear_predictor(self) -> pd.Series:
        """``predict(m, type = "link")`` at the data (offset included)."""
        return pd.Series(self.fit.state.eta, index=self.design.row_index)

    @property
    def fittedvalues(self) -> pd.Series:
        """``fitted(m)``: means (probabilities for a binomial response)."""
        return pd.Series(self.fit.state.mu, index=self.design.row_index)

    def resid(self, type: str = "deviance") -> pd.Series:
        """``residuals(m, type)``: ``"deviance"``, ``"pearson"``, ``"response"``,
        ``"working"``."""
        d, mu = self.data, self.fit.state.mu
        if type == "deviance":
            dr = self.unit_family.dev_resids(d.y, mu, d.pw)
            r = np.sign(d.y - mu) * np.sqrt(np.maximum(dr, 0.0))
        elif type == "pearson":
            r = (d.y - mu) * np.sqrt(d.pw) / np.sqrt(self.unit_family.variance(mu))
        elif type == "response":
            r = d.y - mu
        elif type == "working":
            r = (d.y - mu) / self.family.link.mu_eta(self.fit.state.eta)
        else:
            raise ArgumentError(f"type must be 'deviance', 'pearson', 'response' or "
                                f"'working', not {type!r}")
        return pd.Series(r, index=self.design.row_index)

    # ------------------------------------------------------------ summary
    def _summary_parts(self) -> dict:
        from ..report.summary import signif_stars
        method = ("Laplace Approximation" if self.nagq == 1 else
                  "nAGQ = 0 (joint modes of the fixed and random effects)" if self.nagq == 0
                  else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {self.nagq}")
        title = (f"Generalized linear mixed model fit by maximum likelihood ({method})\n"
                 f" Family: {self.family.label}  ( {self.family.link.name} )")
        criteria = {"AIC": self.aic, "BIC": self.bic, "logLik": self.llf,
                    "deviance": self.minus_2_loglik, "df.resid": self.df_resid}
        # glmer's "Scaled residuals": Pearson residuals over the dispersion's root
        scaled = self.resid("pearson").to_numpy() / math.sqrt(self.dispersion)
        quant = pd.Series(np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1.0]),
                          index=["Min", "1Q", "Median", "3Q", "Max"])
        tab = self.fixed()
        fixed = pd.DataFrame({"Estimate": tab["estimate"], "Std. Error": tab["std_err"],
                              "z value": tab["z"], "Pr(>|z|)": tab["p"],
                              "": [signif_stars(v) for v in tab["p"]]})
        notes = []
        if self.design.n_dropped:
            notes.append(f"{self.design.n_dropped} observation"
                         f"{'s' if self.design.n_dropped > 1 else ''} deleted due to "
                         "missing values")
        if self.design.dropped_columns:
            notes.append("fixed-effect model matrix is rank deficient; dropped: "
                         + ", ".join(self.design.dropped_columns))
        if self.is_singular:
            notes.append("boundary (singular) fit: see help('isSingular')")
        if not self.converged:
            notes.append("Convergence: " + "; ".join(self.convergence_messages))
        random = self.varcomp
        if self.family.name in ("gamma", "inverse_gaussian"):  # glmer's Residual line
            random = pd.concat([random, pd.DataFrame(
                {"group": ["Residual"], "var1": [np.nan], "var2": [np.nan],
                 "vcov": [self.dispersion], "sdcor": [self.sigma]})], ignore_index=True)
        V = np.asarray(self.fit.vcov_beta, dtype=float)
        sd = np.sqrt(np.diag(V)) if V.size else np.zeros(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            C = V / np.outer(sd, sd) if V.size else V
        names = list(self.x_names)
        return dict(title=title, formula=self.formula, criteria=criteria,
                    residual_quantiles=quant, random=random, nobs=self.nobs,
                    ngroups=self.ngroups, fixed=fixed, notes=notes, extra=[],
                    fixed_corr=pd.DataFrame(C, index=names, columns=names))

    def summary(self, correlation: bool = False):
        """glmer's ``summary(m)`` (a :class:`~mixedanova.report.summary.Summary`;
        ``print()`` it or read its tables): family and link, AIC, BIC, logLik,
        ``-2 logLik`` (printed as deviance, as lme4), df.resid, the Pearson
        residuals' quantiles, random effects, fixed effects with z and
        ``Pr(>|z|)``; ``correlation=True`` adds the correlation of the fixed effects.

        Examples
        --------
        >>> import numpy as np, pandas as pd, mixedanova as ma
        >>> rng = np.random.default_rng(1)
        >>> herd = np.repeat(np.arange(12), 4)
        >>> size = rng.integers(5, 25, herd.size)
        >>> p = 1 / (1 + np.exp(-(-1.5 + rng.normal(0, 0.6, 12)[herd])))
        >>> d = pd.DataFrame({"herd": herd, "size": size, "inc": rng.binomial(size, p)})
        >>> res = ma.glmm("cbind(inc, size - inc) ~ 1 + (1|herd)", d, family="binomial")
        >>> print(res.summary())          # doctest: +ELLIPSIS
        Generalized linear mixed model fit by maximum likelihood (Laplace Approximation)
         Family: binomial  ( logit )
        Formula: cbind(inc, size - inc) ~ 1 + (1|herd)
        ...
        Fixed effects:
        ...
        (Intercept) ...
        ---
        Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1
        """
        from ..report.summary import Summary
        return Summary.from_results(self, correlation=correlation)

    def _repr_html_(self) -> str:
        return self.summary().as_html()

    def __str__(self) -> str:
        return str(self.summary())

    def __repr__(self) -> str:
        return (f"<GlmmResults {self.family} nAGQ={self.nagq}: -2 logLik "
                f"{self.minus_2_loglik:.4f}, {self.nobs} obs>")
