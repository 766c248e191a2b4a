"""Profile and parametric-bootstrap intervals of a GLMM (lme4's
``confint(m, method = "profile" | "boot")`` for ``glmer`` fits).

Parameters are those of the linear-mixed-model intervals without ``sigma``
(the scale of binomial and Poisson models is 1): per random-effects term the
SDs and correlations (``sd_(Intercept)|herd``, lme4's ``.sig01``), then the
fixed effects.

* Profile: for each parameter ``psi`` (SD/correlation scale, or a fixed
  effect), ``zeta(psi) = sign(psi - psi_hat) sqrt(dev(psi) - dev_min)`` with
  ``dev(psi)`` the minimum of the fit's ``-2 log L`` (Laplace, or the quadrature
  of ``nAGQ > 1``; each value a PIRLS to the conditional modes) over all other
  variance parameters and fixed effects; the limits are where ``|zeta|`` crosses
  ``sqrt(qchisq(level, 1))``, found by root finding
  (:func:`~mixedanova.inference.profiler.bracket_interval`).  lme4 evaluates
  ``zeta`` on a grid and interpolates a spline through it, so its limits carry
  the spline's error (about 1e-4 relative with its default spacing).  An SD
  whose profile stays below the cutoff down to 0 gets 0 as its lower limit.
* Bootstrap: ``n_boot`` responses drawn from the fit
  (:func:`~mixedanova.inference.simulate.simulate_response`: new random
  effects, then the family), each refitted (``res.refit``, started at the
  estimates), percentile limits (``numpy.quantile``, linear interpolation).
  Refits that fail are counted and left out.
"""
from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np

from ..errors import ArgumentError, MixedAnovaError
from .profiler import (bracket_interval, is_correlation, minimize_bounded, psi_from_theta,
                       theta_from_psi, variance_parameter_names)
from .simulate import simulate_response

__all__ = ["glmm_parameter_names", "glmm_estimates", "glmm_profile_limits",
           "glmm_bootstrap_limits", "GlmmProfiler", "profile_step"]


def glmm_parameter_names(res) -> list[str]:
    """SD/correlation names (no ``sigma``), then the fixed effects."""
    return variance_parameter_names(res)[:-1] + list(res.x_names)


def glmm_estimates(res) -> np.ndarray:
    """The estimates in the order of :func:`glmm_parameter_names`."""
    layout = res.design.theta_layout()
    return np.concatenate([psi_from_theta(layout, res.theta, 1.0)[:-1],
                           np.asarray(res.fe_params, dtype=float)])


class GlmmProfiler:
    """``-2 log L`` over ``x = (psi, beta)`` (SDs/correlations, then the fixed
    effects) and its profiles: :meth:`profile` minimizes over all but one."""

    def __init__(self, res) -> None:
        self.res = res
        self.layout = res.design.theta_layout()
        self.k = self.layout.size
        self.x_hat = glmm_estimates(res)
        self.dev_min = float(res.minus_2_loglik)
        cor = is_correlation(res)[:-1]
        p = len(self.x_hat) - self.k
        self.lower = np.concatenate([np.where(cor, -1.0, 0.0), np.full(p, -np.inf)])
        self.upper = np.concatenate([np.where(cor, 1.0, np.inf), np.full(p, np.inf)])
        se = np.asarray(res.bse_fe, dtype=float)
        sd = np.abs(self.x_hat[:self.k])
        vscale = np.where(cor, 1.0, np.where(sd > 1e-3, sd, 1.0))
        self.scale = np.concatenate([vscale, np.where(se > 0, se, 1.0)])
        self._curvature: dict[int, dict] = {}

    def dev(self, x: np.ndarray) -> float:
        theta, _ = theta_from_psi(self.layout, np.append(x[:self.k], 1.0))
        val = self.res.objective_at(theta, x[self.k:])
        return val if math.isfinite(val) else math.inf

    def profile(self, c: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        free = np.array([i for i in range(self.x_hat.size) if i != c], dtype=int)
        sc = self.scale[free]

        def f(z):
            x = np.empty(self.x_hat.size)
            x[free] = z * sc
            x[c] = value
            return self.dev(x)

        z, val = minimize_bounded(f, start[free] / sc, self.lower[free] / sc,
                                  self.upper[free] / sc, self._curvature.setdefault(c, {}))
        x = start.copy()
        x[free] = z * sc
        x[c] = value
        return val, x


def profile_step(pr: GlmmProfiler, c: int) -> float:
    """First step out from the estimate when bracketing parameter ``c``'s limits."""
    est = float(pr.x_hat[c])
    if c < pr.k:
        return 0.1 if pr.lower[c] < 0 else 0.25 * max(abs(est), 1e-2)
    se = float(np.asarray(pr.res.bse_fe, dtype=float)[c - pr.k])
    return se if se > 0 else 0.1


def glmm_profile_limits(res, level: float, wanted: set[str]) -> dict[str, tuple[float, float]]:
    """Profile limits of the parameters named in ``wanted`` (others NaN)."""
    from scipy import stats
    if res.nagq == 0:
        raise ArgumentError("method='profile' needs a Laplace or quadrature fit; an nAGQ = 0 "
                            "fit does not optimize the fixed effects on the likelihood")
    cutoff = math.sqrt(stats.chi2.ppf(level, 1))
    names = glmm_parameter_names(res)
    out = {n: (math.nan, math.nan) for n in names}
    pr = GlmmProfiler(res)
    for c, name in enumerate(names):
        if name not in wanted:
            continue
        est = float(pr.x_hat[c])
        done: list[tuple[float, np.ndarray]] = [(est, pr.x_hat.copy())]

        def zeta(v, c=c, est=est, done=done):
            start = min(done, key=lambda t: abs(t[0] - v))[1]
            val, x = pr.profile(c, v, start)
            if math.isfinite(val):
                done.append((v, x))
            return math.copysign(math.sqrt(max(val - pr.dev_min, 0.0)), v - est)

        out[name] = bracket_interval(zeta, est, pr.lower[c], pr.upper[c],
                                     profile_step(pr, c), cutoff)
    return out


def glmm_bootstrap_limits(res, level: float, n_boot: int, seed, progress: bool = False
                          ) -> tuple[dict[str, tuple[float, float]], int]:
    """Percentile limits from ``n_boot`` parametric-bootstrap refits, and the number
    of refits that failed."""
    rng = np.random.default_rng(seed)
    layout = res.design.theta_layout()
    draws, failed = [], 0
    t0 = time.perf_counter()
    for i in range(int(n_boot)):
        ystar = simulate_response(res, rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = res.refit(ystar, start_theta=res.theta)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError, MixedAnovaError):
            failed += 1
            continue
        draws.append(np.concatenate([psi_from_theta(layout, fit.theta, 1.0)[:-1],
                                     np.asarray(fit.fe_params, dtype=float)]))
        if progress and ((i + 1) % max(1, n_boot // 20) == 0 or i + 1 == n_boot):
            rate = (i + 1) / max(time.perf_counter() - t0, 1e-9)
            print(f"bootstrap: {i + 1}/{n_boot} refits ({rate:.1f}/s, {failed} failed)",
                  file=sys.stderr, flush=True)
    if not draws:
        raise MixedAnovaError(f"every one of the {n_boot} bootstrap refits failed")
    arr = np.array(draws)
    alpha = (1.0 - level) / 2.0
    lo = np.quantile(arr, alpha, axis=0)
    hi = np.quantile(arr, 1.0 - alpha, axis=0)
    return {n: (a, b) for n, a, b in zip(glmm_parameter_names(res), lo, hi)}, failed
