"""The deviance profiled in lme4's SD/correlation/sigma and fixed-effect scales.

:class:`Profiler` minimizes the deviance over all parameters but one, held at a
given value; :mod:`mixedanova.inference.intervals` finds where the signed root
``zeta`` of the profile crosses a cutoff (lme4's ``confint(m, method = "profile")``)
and :mod:`mixedanova.inference.profile` evaluates ``zeta`` on a grid (``profile(m)``).

The variance parameters are named as in lme4's ``confint(m, oldNames = FALSE)``:
per random-effects term (design order) ``sd_<col>|<group>`` and
``cor_<col_i>.<col_j>|<group>`` in the order of ``theta`` (lower triangle, column
by column), then ``sigma``.
"""
from __future__ import annotations

import math

import numpy as np

from ..likelihood.boundary import psd_cholesky
from .satterthwaite import deviance_function_for

__all__ = ["Profiler", "variance_parameter_names", "is_correlation", "psi_from_theta",
           "theta_from_psi"]

_LOG2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------- parameterization
def variance_parameter_names(res) -> list[str]:
    """lme4's ``confint`` names of the SD/correlation parameters, then ``sigma``."""
    names = []
    for b, g in zip(res.design.blocks, res.design.group_names):
        cols = b.columns
        for j in range(b.q):
            for i in range(j, b.q):
                names.append(f"sd_{cols[i]}|{g}" if i == j else f"cor_{cols[i]}.{cols[j]}|{g}")
    return names + ["sigma"]


def is_correlation(res) -> np.ndarray:
    """Boolean mask over :func:`variance_parameter_names`: which are correlations."""
    out = []
    for b in res.design.blocks:
        for j in range(b.q):
            for i in range(j, b.q):
                out.append(i != j)
    return np.array(out + [False], dtype=bool)


def psi_from_theta(layout, theta: np.ndarray, sigma: float) -> np.ndarray:
    """SDs and correlations (lme4's ``.sig01, ...``) and ``sigma`` from ``(theta, sigma)``."""
    out = []
    for T in layout.templates(np.asarray(theta, dtype=float)):
        cov = sigma * sigma * T @ T.T
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        q = T.shape[0]
        for j in range(q):
            for i in range(j, q):
                if i == j:
                    out.append(sd[i])
                else:
                    den = sd[i] * sd[j]
                    out.append(cov[i, j] / den if den > 0 else 0.0)
    return np.array(out + [sigma])


def theta_from_psi(layout, psi: np.ndarray) -> tuple[np.ndarray, float]:
    """``(theta, sigma)`` from SDs, correlations and ``sigma``."""
    sigma = float(psi[-1])
    theta = np.empty(layout.size)
    pos = 0
    for q, off in zip(layout.qs, layout.offsets):
        sd = np.zeros(q)
        R = np.eye(q)
        k = pos
        for j in range(q):
            for i in range(j, q):
                if i == j:
                    sd[i] = psi[k]
                else:
                    R[i, j] = R[j, i] = psi[k]
                k += 1
        T = psd_cholesky(np.outer(sd, sd) * R, tol=1e-14) / sigma
        k = off
        for j in range(q):
            for i in range(j, q):
                theta[k] = T[i, j]
                k += 1
        pos = k
    return theta, sigma


# --------------------------------------------------------------------- helpers
def _minimize(fun, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """Bounded minimization with central-difference gradients; returns ``(x, f)``."""
    from scipy import optimize
    if x0.size == 0:
        return x0, fun(x0)

    def grad(x):
        g = np.empty_like(x)
        for i in range(x.size):
            h = 1e-7 * max(1.0, abs(x[i]))
            xp, xm = x.copy(), x.copy()
            xp[i] = min(x[i] + h, upper[i])
            xm[i] = max(x[i] - h, lower[i])
            g[i] = (fun(xp) - fun(xm)) / (xp[i] - xm[i])
        return g

    bounds = list(zip(np.where(np.isfinite(lower), lower, None),
                      np.where(np.isfinite(upper), upper, None)))
    out = optimize.minimize(fun, np.clip(x0, lower, upper), jac=grad, method="L-BFGS-B",
                            bounds=bounds, options={"ftol": 1e-11, "gtol": 1e-6,
                                                    "maxiter": 2000})
    return np.asarray(out.x), float(out.fun)


def _fit_by(res, reml: bool):
    """``res`` itself, or ``res`` refitted by REML/ML when it was fitted the other way."""
    want = "REML" if reml else "ML"
    if res.method == want:
        return res
    return res.model.fit(want, start=res.state.theta, warn=False)


class Profiler:
    """Profiles of the deviance in lme4's SD/correlation/sigma and fixed-effect scales.

    Parameters
    ----------
    res : LinearMixedResults
        The fit; refitted by ML (or REML) first when it was fitted the other way.
    reml : bool
        Profile the REML criterion instead of the ML deviance (variance
        parameters only; :meth:`profile_beta` always uses the ML deviance).
    """

    def __init__(self, res, reml: bool) -> None:
        self.res = res
        self.layout = res.design.theta_layout()
        self.dev = deviance_function_for(res, reml)
        self.fit = _fit_by(res, reml)
        self.psi_hat = psi_from_theta(self.layout, self.fit.state.theta, self.fit.sigma)
        # the minimum of the engine's own criterion (a fit's reported objective
        # also holds the prior weights' constant, which the profile does not see)
        self.dev_min = float(self.dev(self.fit.state.theta))
        self.cor = is_correlation(res)
        self.lower = np.where(self.cor, -1.0, 0.0)
        self.lower[-1] = 1e-8 * max(self.psi_hat[-1], 1e-300)
        self.upper = np.where(self.cor, 1.0, np.inf)
        sc = np.where(self.cor, 1.0, np.abs(self.psi_hat))
        self.scale = np.where(sc > 0, sc, self.psi_hat[-1])

    def deviance_psi(self, psi: np.ndarray) -> float:
        theta, sigma = theta_from_psi(self.layout, psi)
        try:
            return float(self.dev.at_sigma(theta, sigma))
        except ArithmeticError:
            return math.inf

    def profile_var(self, c: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        free = np.array([i for i in range(self.psi_hat.size) if i != c], dtype=int)
        sc = self.scale[free]

        def f(x):
            psi = np.empty(self.psi_hat.size)
            psi[free] = x * sc
            psi[c] = value
            return self.deviance_psi(psi)

        x, val = _minimize(f, start[free] / sc, self.lower[free] / sc, self.upper[free] / sc)
        psi = start.copy()
        psi[free] = x * sc
        psi[c] = value
        return val, psi

    def profile_beta(self, j: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        dev, n = self.dev, self.dev.n
        lower = self.layout.lower

        def f(theta):
            try:
                fac = dev.factor(theta)
            except ArithmeticError:
                return math.inf
            beta = fac.solution()[0]
            U = fac.vcov_unscaled()
            pw = fac.pwrss + (value - beta[j]) ** 2 / U[j, j]
            return fac.ldL2 + n * (1.0 + _LOG2PI + math.log(pw / n))

        x, val = _minimize(f, start, lower, np.full(lower.size, np.inf))
        return val, x

    def interval(self, zeta, est: float, lo_bound: float, hi_bound: float, step: float,
                 cutoff: float) -> tuple[float, float]:
        """Where ``|zeta|`` crosses ``cutoff`` on each side of ``est`` (doubling steps to
        bracket, then Brent); a bound reached first is returned as the limit."""
        from scipy import optimize
        out = []
        for sign, bound in ((-1.0, lo_bound), (1.0, hi_bound)):
            a = est
            s = step
            b = None
            for _ in range(60):
                cand = est + sign * s
                if sign < 0 and cand <= bound:
                    cand = bound
                if sign > 0 and cand >= bound:
                    cand = bound
                zc = zeta(cand)
                if abs(zc) >= cutoff:
                    b = cand
                    break
                if cand == bound:
                    break
                a = cand
                s *= 2.0
            if b is None:
                out.append(bound)
                continue
            out.append(optimize.brentq(lambda v: abs(zeta(v)) - cutoff, a, b,
                                       xtol=1e-10 * max(1.0, abs(est)), rtol=1e-12))
        return out[0], out[1]
