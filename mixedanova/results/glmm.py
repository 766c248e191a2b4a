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

from ..design.build import Design, group_labels
from ..design.theta import SINGULAR_TOL
from ..errors import ArgumentError, DesignError
from .lmm import GroupDict

if TYPE_CHECKING:  # pragma: no cover
    from ..glmm.families import Family
    from ..glmm.fit import GlmmFit
    from ..glmm.dispersion import ParamFit
    from ..glmm.laplace import GlmmData, LaplaceObjective
    from ..glmm.separation import SeparationReport

__all__ = ["GlmmResults"]


class GlmmResults:
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
    param_fit : ParamFit or None
        The estimation of the dispersion (Gamma, inverse Gaussian) or NB shape.
    separation : SeparationReport or None
        The separation check (binomial; counts with a log link).
    """

    def __init__(self, *, design: Design, family: "Family", data: "GlmmData", fit: "GlmmFit",
                 nagq: int, x_names: tuple[str, ...], response: str,
                 objective: "LaplaceObjective", agq=None, formula: str = "",
                 param_fit: "ParamFit | None" = None,
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
        self.param_fit = param_fit
        self.separation = separation

    # ------------------------------------------------------------ basics
    @property
    def nobs(self) -> int:
        return self.design.nobs

    @property
    def ngroups(self) -> dict[str, int]:
        return self.design.ngroups

    @property
    def theta(self) -> np.ndarray:
        """lme4's ``getME(m, "theta")``."""
        return self.fit.theta

    @property
    def theta_names(self) -> tuple[str, ...]:
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
        return pd.Series(np.sqrt(np.diag(self.fit.vcov_beta)), index=list(self.x_names),
                         name="std_err")

    def fixed(self) -> pd.DataFrame:
        """``coef(summary(m))``: ``estimate, std_err, z, p`` (Wald z, normal p values)."""
        from scipy.stats import norm

        est, se = self.fe_params.to_numpy(), self.bse_fe.to_numpy()
        z = est / se
        return pd.DataFrame({"estimate": est, "std_err": se, "z": z,
                             "p": 2.0 * norm.sf(np.abs(z))}, index=list(self.x_names))

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
        return self.fit.value + 2.0 * self.npar

    @property
    def bic(self) -> float:
        return self.fit.value + math.log(self.nobs) * self.npar

    @property
    def df_resid(self) -> int:
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
        """Likelihood-ratio tests of nested fits (lme4's ``anova(m0, m1)``).

        Rows ordered by the number of parameters: ``npar, AIC, BIC, logLik,
        deviance`` (``-2 logLik``, as ``anova()``), then ``Chisq, Df, p`` against
        the previous row.  The fits must be on the same rows; quadrature and
        Laplace fits compare (both keep the whole log-likelihood).
        """
        from scipy.stats import chi2

        fits = sorted((self,) + others, key=lambda r: r.npar)
        if len({f.nobs for f in fits}) != 1:
            raise ArgumentError("the fits use different numbers of observations")
        rows = []
        for k, f in enumerate(fits):
            row = {"model": f.formula, "npar": f.npar, "AIC": f.aic, "BIC": f.bic,
                   "logLik": f.llf, "deviance": f.minus_2_loglik,
                   "Chisq": np.nan, "Df": np.nan, "p": np.nan}
            if k:
                prev = fits[k - 1]
                chisq = max(prev.minus_2_loglik - f.minus_2_loglik, 0.0)
                df = f.npar - prev.npar
                row.update(Chisq=chisq, Df=df, p=float(chi2.sf(chisq, df)) if df else np.nan)
            rows.append(row)
        return pd.DataFrame(rows)

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
                rows.append((name, b.columns[i], None, cov[i, i], sd[i]))
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

    def predict(self, newdata: pd.DataFrame | None = None, type: str = "link",
                re_form=None, allow_new_levels: bool = False) -> np.ndarray:
        """Predictions (lme4's ``predict.merMod``).

        Parameters
        ----------
        newdata : pandas.DataFrame, optional
            Default: the data of the fit.
        type : {"link", "response"}
        re_form : None or "NA" or "~0"
            ``None`` includes every random effect (R's ``re.form = NULL``);
            ``"NA"``/``"~0"`` none (population level).
        allow_new_levels : bool
            A level not in the fit gets random effect 0; else it is an error.
        """
        if type not in ("link", "response"):
            raise ArgumentError(f"type must be 'link' or 'response', not {type!r}")
        if re_form is not None and not (isinstance(re_form, str)
                                        and re_form.replace(" ", "") in ("NA", "~0")):
            raise ArgumentError("re_form must be None (all random effects) or 'NA' / '~0'")
        if newdata is None:
            eta = self.fit.state.eta.copy()
            if re_form is not None:
                eta = self.design.offset_values + self.design.X @ self.fit.beta
        else:
            eta = (self.design.offset_for(newdata)
                   + self.design.fixed_matrix(newdata) @ self.fit.beta)
            if re_form is None:
                for b, modes in zip(self.design.blocks, self._modes):
                    labels = group_labels(newdata, b.factors)
                    codes = b.levels.get_indexer(labels)
                    new = codes < 0
                    if new.any() and not allow_new_levels:
                        raise DesignError(f"grouping factor {b.group!r} has levels not in the "
                                          f"fit ({list(pd.unique(labels[new]))[:5]}); pass "
                                          "allow_new_levels=True to predict them with "
                                          "random effect 0")
                    z = b.term_matrix(newdata)
                    vals = np.where(new[:, None], 0.0, modes[np.maximum(codes, 0)])
                    eta = eta + np.einsum("ij,ij->i", z, vals)
        return eta if type == "link" else self.family.link.linkinv(eta)

    # ------------------------------------------------------------ summary
    def summary(self) -> str:
        """glmer-style summary text."""
        fam = self.family
        method = ("Laplace Approximation" if self.nagq <= 1 else
                  f"Adaptive Gauss-Hermite Quadrature (nAGQ = {self.nagq})")
        lines = [f"Generalized linear mixed model fit by maximum likelihood ({method})",
                 f" Family: {fam.label}  ( {fam.link.name} )",
                 f"Formula: {self.formula}", ""]
        lines.append(f"{'AIC':>9} {'BIC':>9} {'logLik':>9} {'deviance':>9} {'df.resid':>9}")
        lines.append(f"{self.aic:9.1f} {self.bic:9.1f} {self.llf:9.1f} "
                     f"{self.minus_2_loglik:9.1f} {self.df_resid:9d}")
        lines.append("")
        scaled = self.resid("pearson").to_numpy() / math.sqrt(self.dispersion)
        q = np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1])
        lines.append("Scaled residuals:")
        lines.append("    Min      1Q  Median      3Q     Max ")
        lines.append(" ".join(f"{v:7.4f}" for v in q))
        lines.append("")
        lines.append("Random effects:")
        lines.append(f" {'Groups':<10} {'Name':<14} {'Variance':>10} {'Std.Dev.':>9}")
        for _, row in self.varcomp.iterrows():
            if row["var2"] is None:
                lines.append(f" {row['group']:<10} {row['var1']:<14} {row['vcov']:10.4g} "
                             f"{row['sdcor']:9.4g}")
            else:
                lines.append(f" {'':<10} Corr({row['var1']},{row['var2']}) {row['sdcor']:.3f}")
        if fam.name in ("gamma", "inverse_gaussian"):
            lines.append(f" {'Residual':<10} {'':<14} {self.dispersion:10.4g} "
                         f"{self.sigma:9.4g}")
        groups = "; ".join(f"{g}, {n}" for g, n in self.ngroups.items())
        lines.append(f"Number of obs: {self.nobs}, groups:  {groups}")
        lines.append("")
        lines.append("Fixed effects:")
        tab = self.fixed()
        lines.append(f"{'':<16} {'Estimate':>10} {'Std. Error':>10} {'z value':>8} "
                     f"{'Pr(>|z|)':>10}")
        for name, r in tab.iterrows():
            lines.append(f"{name:<16} {r['estimate']:10.5f} {r['std_err']:10.5f} "
                         f"{r['z']:8.3f} {r['p']:10.3g}")
        if self.is_singular:
            lines.append("boundary (singular) fit: see help('isSingular')")
        if not self.converged:
            lines.append("Convergence: " + "; ".join(self.convergence_messages))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (f"<GlmmResults {self.family} nAGQ={self.nagq}: -2 logLik "
                f"{self.minus_2_loglik:.4f}, {self.nobs} obs>")
