"""Profile intervals for fits with structured random-effect covariances or held
parameters (``diag``/``cs``/``ar1``/``toep`` terms, ``fixed=``; issue 21).

The parameters are those ``fixed=`` takes
(:class:`~mixedanova.design.covstruct.CovarianceParameters`: per term its
variances and correlations) and ``sigma``.  They are profiled on their
unconstrained scale ``y = (x, log sigma)``, ``x`` the log SDs (absolute, not
relative to ``sigma``) and the correlation parameters: the criterion at ``y`` is
the REML criterion (or ML deviance) at ``theta = chol(Sigma(x)) / sigma`` with
``sigma`` given (:meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.at_sigma`).
For the parameter ``y_c`` held at a value, every other FREE entry is re-optimized
(held parameters stay where ``fixed=`` put them); the interval is where the
profiled criterion exceeds its minimum by ``qchisq(level, 1)``.  Every map from
``y`` to the reported scale (variance ``exp(2 x)``, correlation ``tanh`` or
``cs``'s logistic map, ``sigma = exp``) is increasing, so the interval maps to
the interval.  A held parameter gets no interval (NaN).  The fixed effects are
profiled on the ML deviance with ``beta_j`` held (the GLS solution with one
coefficient fixed adds ``(v - beta_j)^2 / var(beta_j)`` to the penalized RSS).
"""
from __future__ import annotations

import math

import numpy as np

from .profiler import bracket_interval, fixed_effect_intervals, minimize_bounded

__all__ = ["StructuredProfiler", "structured_parameters", "structured_profile_intervals"]

_LOG2PI = math.log(2.0 * math.pi)
_LOG_SIGMA_BOUNDS = (-30.0, 30.0)


def _refit(res, reml: bool):
    want = "REML" if reml else "ML"
    if res.method == want:
        return res
    return res.model.fit(want, warn=False)


def structured_parameters(res) -> tuple[list[str], np.ndarray]:
    """Names (``fixed=``'s, then ``"sigma"``) and estimates (variances,
    correlations, ``sigma``) of a structured fit's covariance parameters."""
    sf = res.state.structured
    names = list(sf.parameters.names) + ["sigma"]
    return names, np.r_[sf.parameters.natural(sf.x, 1.0 if sf.absolute else res.sigma),
                        res.sigma]


class StructuredProfiler:
    """The criterion of a structured fit as a function of ``y = (x, log sigma)``.

    Parameters
    ----------
    res : LinearMixedResults
        A fit with ``res.state.structured`` (refitted by ML or REML first when it
        was fitted the other way).
    reml : bool
        Profile the REML criterion (else the ML deviance).
    """

    def __init__(self, res, reml: bool) -> None:
        self.res = res
        self.fit = _refit(res, reml)
        self.crit = res.model.deviance_function(reml)
        sf = self.fit.state.structured
        self.cov = sf.parameters
        sigma = float(self.fit.sigma)
        x = np.array(sf.x, dtype=float)
        var = self.cov.variance_mask()
        if not sf.absolute:
            x = np.where(var, x + math.log(sigma), x)
        self.y_hat = np.r_[x, math.log(sigma)]
        self.names = list(self.cov.names) + ["sigma"]
        self.free = np.r_[sf.free, self.fit.state.fixed_sigma is None]
        b = self.cov.bounds()
        self.lower = np.array([lo for lo, _ in b] + [_LOG_SIGMA_BOUNDS[0]])
        self.upper = np.array([hi for _, hi in b] + [_LOG_SIGMA_BOUNDS[1]])
        self.dev_min = self.deviance(self.y_hat)
        self._curvature: dict[int, dict] = {}

    def theta_sigma(self, y: np.ndarray) -> tuple[np.ndarray, float]:
        """lme4's ``theta`` and ``sigma`` at ``y``."""
        s = math.exp(float(y[-1]))
        return self.cov.theta(np.asarray(y[:-1], dtype=float), s), s

    def deviance(self, y: np.ndarray) -> float:
        """The criterion at ``y`` (``inf`` where it cannot be evaluated)."""
        try:
            theta, s = self.theta_sigma(y)
            v = float(self.crit.at_sigma(theta, s))
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return math.inf
        return v if math.isfinite(v) else math.inf

    def natural(self, c: int, value: float) -> float:
        """``y_c = value`` on the reported scale (variance, correlation, sigma)."""
        if c == len(self.y_hat) - 1:
            return math.exp(value)
        y = self.y_hat[:-1].copy()
        y[c] = value
        return float(self.cov.natural(y)[c])

    def _minimize(self, f, start: np.ndarray, others: np.ndarray, memo: dict):
        z, val = minimize_bounded(f, start[others], self.lower[others], self.upper[others],
                                  memo)
        out = start.copy()
        out[others] = z
        return val, out

    def profile(self, c: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """The minimum over the free entries other than ``c`` with ``y_c = value``."""
        others = np.flatnonzero(self.free)
        others = others[others != c]
        base = np.array(start, dtype=float)
        base[c] = value

        def f(z):
            y = base.copy()
            y[others] = z
            return self.deviance(y)

        return self._minimize(f, base, others, self._curvature.setdefault(c, {}))

    def interval(self, c: int, cutoff: float) -> tuple[float, float]:
        """Profile interval of ``y_c`` (unconstrained scale)."""
        est = float(self.y_hat[c])
        done: list[tuple[float, np.ndarray]] = [(est, self.y_hat.copy())]

        def zeta(v: float) -> float:
            start = min(done, key=lambda t: abs(t[0] - v))[1]
            val, y = self.profile(c, v, start)
            if len(done) > 1:  # a warm start can sit in another basin: also from the optimum
                val2, y2 = self.profile(c, v, self.y_hat)
                if val2 < val or not np.isfinite(val):
                    val, y = val2, y2
            if np.isfinite(val):
                done.append((v, y))
            return math.copysign(math.sqrt(max(val - self.dev_min, 0.0)), v - est)

        return bracket_interval(zeta, est, float(self.lower[c]), float(self.upper[c]), 0.25,
                                cutoff)

    def beta_deviance(self, j: int, value: float, y: np.ndarray) -> float:
        """ML deviance at ``y`` with ``beta_j = value`` and the other coefficients at
        their GLS solution."""
        try:
            theta, s = self.theta_sigma(y)
            fac = self.crit.factor(theta)
            beta = fac.solution()[0]
            U = fac.vcov_unscaled()
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return math.inf
        pw = fac.pwrss + (value - beta[j]) ** 2 / U[j, j]
        v = fac.ldL2 + self.crit.dof * (_LOG2PI + 2.0 * math.log(s)) + pw / s ** 2
        return v if math.isfinite(v) else math.inf


def _beta_intervals(res, cutoff: float, wanted: set[str]) -> dict[str, tuple[float, float]]:
    """Profile intervals of the fixed effects on the ML deviance."""
    names = list(res.design.x_names)
    out = {n: (math.nan, math.nan) for n in names}
    if not any(n in wanted for n in names):
        return out
    pr = StructuredProfiler(res, reml=False)
    beta_hat = pr.fit.state.beta
    se = np.sqrt(np.diag(pr.fit.state.vcov_beta))
    others = np.flatnonzero(pr.free)
    dev_min = pr.beta_deviance(0, float(beta_hat[0]), pr.y_hat)

    def profile_at(j: int, v: float, start: np.ndarray, memo: dict):
        def f(z):
            y = start.copy()
            y[others] = z
            return pr.beta_deviance(j, v, y)

        return pr._minimize(f, start, others, memo)

    return fixed_effect_intervals(names, wanted, beta_hat, se, pr.y_hat, dev_min, profile_at,
                                  cutoff)


def structured_profile_intervals(res, level: float, criterion: str,
                                 wanted: set[str]) -> dict[str, tuple[float, float]]:
    """Profile intervals of a structured fit's covariance parameters (names as
    ``fixed=`` takes them, and ``sigma``; variances and correlations) and its
    fixed effects; ``criterion`` "REML" or "ML" for the covariance parameters
    (the fixed effects always use the ML deviance).  Held parameters: NaN."""
    from scipy import stats

    cutoff = math.sqrt(stats.chi2.ppf(level, 1))
    out: dict[str, tuple[float, float]] = {}
    names = list(res.state.structured.parameters.names) + ["sigma"]
    if any(n in wanted for n in names):
        pr = StructuredProfiler(res, str(criterion).upper() == "REML")
        for c, name in enumerate(pr.names):
            if name not in wanted or not pr.free[c]:
                out[name] = (math.nan, math.nan)
                continue
            lo, hi = pr.interval(c, cutoff)
            out[name] = (pr.natural(c, lo), pr.natural(c, hi))
    out.update(_beta_intervals(res, cutoff, wanted))
    return out
