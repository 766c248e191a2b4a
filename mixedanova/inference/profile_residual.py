"""Profile intervals for fits with a residual structure (``residual=``).

The covariance parameters are profiled jointly with the structure's:

* with random terms, ``x = (psi, u)``: ``psi`` lme4's SDs, correlations and
  ``sigma`` (:func:`~mixedanova.inference.profiler.variance_parameter_names`) and
  ``u`` the structure's unconstrained parameters; the criterion at ``x`` is the
  REML criterion (or ML deviance) of the whitened data at ``sigma`` (not profiled);
* a marginal model (no random terms), ``x = u``: mmrm's parameters, the criterion
  itself (nothing is profiled out but ``beta``).

For the parameter ``x_c`` held at a value every other free entry of ``x`` is
re-optimized; the interval is where ``dev_profile(x_c) - dev_min`` reaches
``qchisq(level, 1)``.  A structure parameter is profiled on its unconstrained
scale and reported on its natural scale (phi, rho, SD ratio, power, expon; mmrm's
parameters as they are): every map between them is increasing, so the interval
maps to the interval.  The fixed effects are profiled on the ML deviance with
``beta_j`` held (the GLS solution with one coefficient fixed: its deviance is the
unconstrained one plus ``(v - beta_j)^2 / var(beta_j)`` scaled as for lme4).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ArgumentError
from .profiler import (is_correlation, fixed_effect_intervals, minimize_bounded,
                       bracket_interval, psi_from_theta,
                       theta_from_psi, variance_parameter_names)

__all__ = ["StructureProfiler", "structure_profile_intervals"]

_LOG2PI = math.log(2.0 * math.pi)


def _refit(res, reml: bool):
    want = "REML" if reml else "ML"
    if res.method == want:
        return res
    return res.model.fit(want, warn=False)


class StructureProfiler:
    """The criterion of a fit with a residual structure as a function of ``x``.

    Parameters
    ----------
    res : LinearMixedResults
        A fit with a residual structure (refitted by ML or REML first when it was
        fitted the other way).
    reml : bool
        Profile the REML criterion (else the ML deviance).
    """

    def __init__(self, res, reml: bool) -> None:
        self.res = res
        self.fit = _refit(res, reml)
        self.crit = res.model.deviance_function(reml)
        rf = self.fit.state.residual
        free = rf.info.get("free")
        if free is not None and not np.all(free):
            raise ArgumentError("profile intervals with residual-structure parameters held "
                                "at given values (fixed=) are not available so far")
        self.structure = rf.structure
        self.marginal = bool(getattr(self.structure, "marginal", False))
        self.layout = res.design.theta_layout()
        self.n_u = len(rf.u)
        if self.marginal:
            self.names: list[str] = []
            self.x_hat = np.array(rf.u, dtype=float)
            self.lower = np.full(self.n_u, -np.inf)
            self.upper = np.full(self.n_u, np.inf)
            self.scale = np.ones(self.n_u)
            free = rf.info["marginal"].free
            self.free = np.ones(self.n_u, dtype=bool) if free is None else np.array(free)
        else:
            self.names = variance_parameter_names(res)
            psi = psi_from_theta(self.layout, self.fit.state.theta, self.fit.sigma)
            cor = is_correlation(res)
            lower = np.where(cor, -1.0, 0.0)
            lower[-1] = 1e-8 * max(psi[-1], 1e-300)
            sc = np.where(cor, 1.0, np.abs(psi))
            self.x_hat = np.concatenate([psi, rf.u])
            self.lower = np.concatenate([lower, np.full(self.n_u, -np.inf)])
            self.upper = np.concatenate([np.where(cor, 1.0, np.inf), np.full(self.n_u, np.inf)])
            self.scale = np.concatenate([np.where(sc > 0, sc, psi[-1]), np.ones(self.n_u)])
            self.free = np.ones(self.x_hat.size, dtype=bool)
        self.names = self.names + list(self.structure.names)
        self.n_psi = self.x_hat.size - self.n_u
        self.dev_min = self.deviance(self.x_hat)
        self._curvature: dict[int, dict] = {}

    def deviance(self, x: np.ndarray) -> float:
        """The criterion at ``x`` (``inf`` outside the parameter space)."""
        x = np.asarray(x, dtype=float)
        try:
            if self.marginal:
                ev = self.crit.evaluate(x)
                return math.inf if ev is None else float(ev.value)
            theta, sigma = theta_from_psi(self.layout, x[:self.n_psi])
            return float(self.crit.at_sigma(np.concatenate([theta, x[self.n_psi:]]), sigma))
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return math.inf

    def profile(self, c: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """The minimum over the free entries of ``x`` other than ``c`` with ``x_c = value``."""
        others = np.flatnonzero(self.free)
        others = others[others != c]
        sc = self.scale[others]
        base = np.array(start, dtype=float)
        base[c] = value

        def f(z):
            x = base.copy()
            x[others] = z * sc
            return self.deviance(x)

        z, val = minimize_bounded(f, base[others] / sc, self.lower[others] / sc,
                                  self.upper[others] / sc, self._curvature.setdefault(c, {}))
        out = base.copy()
        out[others] = z * sc
        return val, out

    def interval(self, c: int, cutoff: float) -> tuple[float, float]:
        """Profile interval of ``x_c`` on ``x``'s scale."""
        est = float(self.x_hat[c])
        done: list[tuple[float, np.ndarray]] = [(est, self.x_hat.copy())]

        def zeta(v: float) -> float:
            start = min(done, key=lambda t: abs(t[0] - v))[1]
            val, x = self.profile(c, v, start)
            if np.isfinite(val):
                done.append((v, x))
            return math.copysign(math.sqrt(max(val - self.dev_min, 0.0)), v - est)

        if c < self.n_psi:
            step = 0.1 if self.lower[c] == -1.0 else 0.25 * max(abs(est), 1e-3 * self.x_hat[
                self.n_psi - 1])
        else:
            step = 0.25
        return bracket_interval(zeta, est, float(self.lower[c]), float(self.upper[c]), step,
                                cutoff)

    def natural(self, c: int, value: float) -> float:
        """``x_c = value`` on the reported scale (a structure parameter's natural one)."""
        if c < self.n_psi or self.marginal:
            return float(value)
        u = np.array(self.x_hat[self.n_psi:], dtype=float)
        j = c - self.n_psi
        if not math.isfinite(value):  # the limit of the natural map at +-infinity
            value = math.copysign(745.0, value)
        u[j] = value
        with np.errstate(over="ignore"):
            return float(self.structure.natural(u)[j])

    def beta_deviance(self, j: int, value: float, x: np.ndarray) -> float:
        """ML deviance at the covariance parameters ``x`` (``psi`` as ``theta`` here)
        with ``beta_j = value`` and the other coefficients at their GLS solution."""
        try:
            if self.marginal:
                ev = self.crit.evaluate(x)
                if ev is None:
                    return math.inf
                return float(ev.value) + (value - ev.beta[j]) ** 2 / ev.phi[j, j]
            fac = self.crit.factor(x)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return math.inf
        n = self.crit.n
        beta = fac.solution()[0]
        U = fac.vcov_unscaled()
        pw = fac.pwrss + (value - beta[j]) ** 2 / U[j, j]
        return fac.ldL2 + n * (1.0 + _LOG2PI + math.log(pw / n))


def _beta_intervals(res, cutoff: float, wanted: set[str]) -> dict[str, tuple[float, float]]:
    """Profile intervals of the fixed effects on the ML deviance."""
    names = list(res.design.x_names)
    out = {n: (math.nan, math.nan) for n in names}
    if not any(n in wanted for n in names):
        return out
    pr = StructureProfiler(res, reml=False)
    fit = pr.fit
    if pr.marginal:
        x0 = np.array(fit.state.residual.u, dtype=float)
        lower = np.full(x0.size, -np.inf)
        free = pr.free
    else:
        x0 = np.concatenate([fit.state.theta, fit.state.residual.u])
        lower = np.concatenate([pr.layout.lower, np.full(pr.n_u, -np.inf)])
        free = np.ones(x0.size, dtype=bool)
    idx = np.flatnonzero(free)
    beta_hat = fit.state.beta
    se = np.sqrt(np.diag(fit.state.vcov_beta))
    dev_min = pr.beta_deviance(0, float(beta_hat[0]), x0) if names else 0.0

    def profile_at(j: int, v: float, start: np.ndarray, memo: dict):
        def f(z):
            x = start.copy()
            x[idx] = z
            return pr.beta_deviance(j, v, x)

        z, val = minimize_bounded(f, start[idx], lower[idx], np.full(idx.size, np.inf), memo)
        x = start.copy()
        x[idx] = z
        return val, x

    return fixed_effect_intervals(names, wanted, beta_hat, se, x0, dev_min, profile_at,
                                  cutoff)


def structure_profile_intervals(res, level: float, criterion: str,
                                wanted: set[str]) -> dict[str, tuple[float, float]]:
    """Profile intervals of the variance parameters (lme4's names), the residual
    structure's parameters (``res.residual_params`` names) and the fixed effects of
    a fit with a residual structure; ``criterion`` "REML" or "ML" for the covariance
    parameters (the fixed effects always use the ML deviance)."""
    from scipy import stats

    cutoff = math.sqrt(stats.chi2.ppf(level, 1))
    pr = StructureProfiler(res, str(criterion).upper() == "REML")
    out: dict[str, tuple[float, float]] = {}
    for c, name in enumerate(pr.names):
        if name not in wanted:
            out[name] = (math.nan, math.nan)
            continue
        if not pr.free[c]:   # held fixed: no interval (NaN, as the other routes)
            out[name] = (math.nan, math.nan)
            continue
        lo, hi = pr.interval(c, cutoff)
        out[name] = (pr.natural(c, lo), pr.natural(c, hi))
    out.update(_beta_intervals(res, cutoff, wanted))
    return out
