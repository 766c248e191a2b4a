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
from .warm_newton import central_gradient, warm_newton

__all__ = ["Profiler", "variance_parameter_names", "is_correlation", "psi_from_theta",
           "theta_from_psi", "minimize_bounded", "bracket_interval", "fixed_effect_intervals"]

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
def minimize_bounded(fun, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray,
              memo: dict | None = None):
    """Bounded minimization with central-difference gradients; returns ``(x, f)``.

    With ``memo`` (one dict per profiled parameter), Newton steps start from the
    Hessian the last call left there (:func:`~.warm_newton.warm_newton`); where
    they cannot finish, or the first time, L-BFGS-B runs and the Hessian at its
    optimum is stored for the next call.
    """
    from scipy import optimize
    if x0.size == 0:
        return x0, fun(x0)
    x0 = np.clip(x0, lower, upper)
    if memo is not None and "H" in memo:
        done = warm_newton(fun, x0, lower, upper, memo["H"])
        if done is not None:
            memo["H"] = done[2]
            return done[0], done[1]

    def grad(x):
        return central_gradient(fun, x, lower, upper)

    bounds = list(zip(np.where(np.isfinite(lower), lower, None),
                      np.where(np.isfinite(upper), upper, None)))
    out = optimize.minimize(fun, x0, jac=grad, method="L-BFGS-B",
                            bounds=bounds, options={"ftol": 1e-11, "gtol": 1e-6,
                                                    "maxiter": 2000})
    x = np.asarray(out.x)
    if memo is not None and np.all(x > lower) and np.all(x < upper):
        memo["H"] = _difference_hessian(grad, x, lower, upper)
    return x, float(out.fun)


def _difference_hessian(grad, x: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """Symmetrized forward differences of ``grad`` (steps ``1e-4 max(1, |x_i|)``,
    backwards near an upper bound): a start for Newton's method."""
    g0 = grad(x)
    H = np.empty((x.size, x.size))
    for i in range(x.size):
        h = 1e-4 * max(1.0, abs(x[i]))
        if x[i] + h >= upper[i]:
            h = -h
        xh = x.copy()
        xh[i] += h
        H[:, i] = (grad(xh) - g0) / h
    return 0.5 * (H + H.T)


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
        if getattr(res.state, "structured", None) is not None:
            from ..errors import FitError
            raise FitError("profile intervals move lme4's theta freely, which a fit with "
                           "structured random-effect covariances or held parameters "
                           "(fixed=) does not; use method='wald' or 'boot'")
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
        # per profiled parameter, the Hessian of the last inner minimization
        self._curvature: dict[tuple[str, int], dict] = {}

    def deviance_psi(self, psi: np.ndarray) -> float:
        theta, sigma = theta_from_psi(self.layout, psi)
        try:
            return float(self.dev.at_sigma(theta, sigma))
        except ArithmeticError:
            return math.inf

    def on_bound(self, psi: np.ndarray, c: int) -> bool:
        """An entry other than ``c`` of ``psi`` is on its lower or upper bound."""
        at = (psi <= self.lower) | (psi >= self.upper)
        at[c] = False
        return bool(np.any(at))

    def profile_var(self, c: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        free = np.array([i for i in range(self.psi_hat.size) if i != c], dtype=int)
        sc = self.scale[free]

        def f(x):
            psi = np.empty(self.psi_hat.size)
            psi[free] = x * sc
            psi[c] = value
            return self.deviance_psi(psi)

        x, val = minimize_bounded(f, start[free] / sc, self.lower[free] / sc,
                                  self.upper[free] / sc, self._curvature.setdefault(("var", c), {}))
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

        x, val = minimize_bounded(f, start, lower, np.full(lower.size, np.inf),
                                  self._curvature.setdefault(("beta", j), {}))
        return val, x

    def interval(self, zeta, est: float, lo_bound: float, hi_bound: float, step: float,
                 cutoff: float) -> tuple[float, float]:
        """:func:`bracket_interval` (kept as a method for the profile code)."""
        return bracket_interval(zeta, est, lo_bound, hi_bound, step, cutoff)


def bracket_interval(zeta, est: float, lo_bound: float, hi_bound: float, step: float,
                     cutoff: float) -> tuple[float, float]:
    """Where ``|zeta|`` crosses ``cutoff`` on each side of ``est`` (steps out to
    bracket, then Brent); a bound reached first is returned as the limit.

    The first step is ``step``; each next one goes to where ``zeta``, taken as
    linear from the estimate through the last point, would be 1.2 times the
    cutoff (at least 1.5, at most 4 times the last step): a profile close to
    linear is bracketed in one or two steps.  Values are remembered, so
    Brent's method does not recompute the bracket's ends.
    """
    from scipy import optimize
    seen: dict[float, float] = {}

    def z(v: float) -> float:
        if v not in seen:
            seen[v] = zeta(v)
        return seen[v]

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
            zc = z(cand)
            if abs(zc) >= cutoff:
                b = cand
                break
            if cand == bound:
                break
            a = cand
            grow = 1.2 * cutoff / abs(zc) if abs(zc) > 0 else 4.0
            s *= min(max(grow, 1.5), 4.0)
        if b is None:
            out.append(bound)
            continue
        out.append(optimize.brentq(lambda v: abs(z(v)) - cutoff, a, b,
                                   xtol=1e-10 * max(1.0, abs(est)), rtol=1e-12))
    return out[0], out[1]


def fixed_effect_intervals(names: list[str], wanted: set[str], beta_hat: np.ndarray,
                           se: np.ndarray, x0: np.ndarray, dev_min: float, profile_at,
                           cutoff: float) -> dict[str, tuple[float, float]]:
    """Profile intervals of the fixed effects in ``wanted``: ``profile_at(j, v,
    start, memo)`` gives ``(deviance, x)``, the deviance minimized over the other
    parameters ``x`` (from ``start``) with ``beta_j`` held at ``v``; each search
    starts from the parameters found at the nearest ``v`` so far (``x0`` at the
    estimate).  Names not wanted get NaN."""
    out = {n: (math.nan, math.nan) for n in names}
    for j, name in enumerate(names):
        if name not in wanted:
            continue
        done: list[tuple[float, np.ndarray]] = [(float(beta_hat[j]), x0.copy())]
        memo: dict = {}

        def zeta(v: float, j=j, done=done, memo=memo) -> float:
            start = min(done, key=lambda t: abs(t[0] - v))[1]
            val, x = profile_at(j, v, start, memo)
            if np.isfinite(val):
                done.append((v, x))
            return math.copysign(math.sqrt(max(val - dev_min, 0.0)), v - beta_hat[j])

        out[name] = bracket_interval(zeta, float(beta_hat[j]), -np.inf, np.inf, float(se[j]),
                                     cutoff)
    return out
