"""The dispersion (Gamma, inverse Gaussian) or shape (negative binomial) of a GLMM
by maximum likelihood of the Laplace (or AGQ) approximation.

For a fixed parameter ``a`` (the dispersion ``phi`` or the NB shape ``k``) the
family is a one-parameter exponential family and the engine's Laplace value
``-2 log L(theta, beta; a)`` applies unchanged: the working weights are
``w (dmu/deta)^2 / (phi V(mu))`` and the penalized deviance ``dev / phi + |u|^2``
(expected information, as glmer).  The parameter is estimated by maximizing the
profile ``min_{theta, beta} -2 log L(theta, beta; a)`` over ``log a``: the outer
one-dimensional optimization of lme4's ``glmer.nb`` (``optTheta``), here by
secant steps on the profile's slope (by the envelope theorem, the partial
derivative in ``log a`` at the inner optimum: two PIRLS evaluations) until the
predicted step is below ``1e-5`` in ``log a`` (bounded Brent on the profile as a
fallback), each inner fit at its own optimum, so that the
result is the joint maximum of the Laplace likelihood over ``(theta, beta, a)``
(glmmTMB's estimate, for the same Laplace approximation).

Start: the NB shape from a Poisson fit (as ``glmer.nb``: the shape that
maximizes the NB likelihood of the Poisson fit's means); the dispersion from the
Pearson statistic of a fit at ``phi = 1``.  When that NB start is beyond the
Poisson limit (the random effects absorbed the overdispersion, so ``theta.ml``
runs to its bound), the profile there is flat to rounding and a search from it
wanders: shapes ``mean(y) * 10^k``, ``k = 0..5``, are scanned and the search
starts from the best of them; a profile falling all the way to the limit gives
the limit (an infinite shape, reported).  glmer.nb, which searches from its
start, stops short of the optimum on such data (a test case: shape 137 against
the joint optimum 75, -2 log L 0.10 higher).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from scipy.optimize import minimize_scalar

from ..errors import FitError
from .families import Family, make_family
from ..likelihood.threads import small_fit_threads
from .fit import GlmmFit, fd_hessian, laplace_gradient
from .laplace_fit import DenseOrder
from .laplace import LaplaceObjective

__all__ = ["ParamFit", "fit_with_param", "retarget", "joint_vcov_beta"]

_XATOL = 1e-6      # in log(parameter)
_HALF_WIDTH = 3.0  # first search interval: start * exp(+-3)
_LOG_BOUNDS = (math.log(1e-8), math.log(1e8))
_SLOPE_STEP = 1e-4
_POISSON_LIMIT = 1e4  # NB shape / largest count beyond which Var = mu (Poisson)
_SECANT_TOL = 1e-5  # predicted distance to the optimum in log(parameter)


@dataclass
class ParamFit:
    """The fit at the estimated dispersion / shape.

    Attributes
    ----------
    family : Family
        The family at the estimate.
    fit : GlmmFit
        The inner fit at the estimate (its SEs are conditional on the parameter,
        as glmer.nb's final ``glmer`` fit).
    start : float
        The starting value of the parameter.
    profile : list of (float, float)
        ``(parameter, -2 log L)`` of every inner fit.
    at_bound : bool
        The estimate is at the search limit (``1e-8`` or ``1e8``).
    messages : list of str
        Problems found (also the joint Hessian not positive definite).
    vcov_beta_joint : numpy.ndarray or None
        The ``beta`` block of ``2 H^{-1}`` with ``H`` the Hessian of ``-2 log L``
        over ``(theta, beta, log a)`` (glmmTMB's convention: the parameter's
        uncertainty included).
    se_log_param : float
        Standard error of ``log a`` from the same Hessian.
    """

    family: Family
    fit: GlmmFit
    start: float
    profile: list = field(default_factory=list)
    at_bound: bool = False
    messages: list = field(default_factory=list)
    vcov_beta_joint: np.ndarray | None = None
    se_log_param: float = math.nan


def retarget(obj: LaplaceObjective, family: Family) -> None:
    """Point the objective at ``family`` (same data, another parameter value)."""
    obj.family = family
    obj.saturated_loglik = family.saturated_loglik(obj.data.y, obj.data.pw)
    obj.count_gap = family.count_gap(obj.data.y, obj.data.pw)


def _nb_shape_given_means(y: np.ndarray, mu: np.ndarray, pw: np.ndarray) -> float:
    """The NB shape maximizing the likelihood at fixed means (MASS's ``theta.ml``)."""
    fam = make_family("negative_binomial", param=1.0)

    def nll(s):
        return -fam.with_param(math.exp(s)).loglik(y, mu, pw)

    r = minimize_scalar(nll, bounds=_LOG_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(math.exp(r.x))


def start_value(obj: LaplaceObjective, family: Family,
                fit_one: Callable[[Family, np.ndarray | None], GlmmFit]) -> tuple[float, GlmmFit]:
    """A starting dispersion / shape and the fit it came from."""
    d = obj.data
    if family.name == "negative_binomial":
        base = fit_one(replace(make_family("poisson", family.link.name),
                               information=family.information), None)
        mu = base.state.mu
        return _nb_shape_given_means(d.y, mu, d.pw), base
    base = fit_one(family.with_param(1.0), None)
    mu = base.state.mu
    v = family.with_param(1.0).variance(mu)
    phi = float(np.sum(d.pw * (d.y - mu) ** 2 / v) / max(1, d.n - d.p))
    return (phi if np.isfinite(phi) and phi > 0 else 1.0), base


def fit_with_param(obj: LaplaceObjective, family: Family,
                   fit_one: Callable[..., GlmmFit],
                   value_of: Callable[[], Callable] | None = None) -> ParamFit:
    """Estimate the family's parameter by the profile Laplace likelihood.

    Parameters
    ----------
    obj : LaplaceObjective
        Retargeted to each family value in turn (and left at the estimate).
    family : Family
        Gamma, inverse Gaussian or negative binomial (its ``param`` ignored).
    fit_one : callable
        ``fit_one(family, start_theta, warm=None) -> GlmmFit``: the inner fit at
        a fixed parameter (retargets ``obj``); ``warm``, the best converged inner
        fit so far, starts it (see :func:`~mixedanova.glmm.fit.fit_glmm`).
    value_of : callable, optional
        ``value_of() -> objective(theta, beta)`` for the joint Hessian (default
        the Laplace value).
    """
    a0, base = start_value(obj, family, fit_one)
    fits: dict[float, GlmmFit] = {}
    state = {"theta": base.theta if family.name != "negative_binomial" else base.theta,
             "warm": None}

    def profile(s: float) -> float:
        s = float(s)
        if s in fits:
            return fits[s].value
        try:
            f = fit_one(family.with_param(math.exp(s)), state["theta"], state["warm"])
        except FitError:
            return math.inf
        fits[s] = f
        if np.isfinite(f.value) and f.value <= min(g.value for g in fits.values()):
            state["theta"] = f.theta
            state["warm"] = f if f.converged else None
        return f.value

    s0 = math.log(a0)
    value = value_of() if value_of is not None else obj

    def slope(s: float) -> float:
        # d profile / d log a = the partial derivative at the inner optimum (envelope)
        f = fits[s]
        out = []
        for d in (_SLOPE_STEP, -_SLOPE_STEP):
            retarget(obj, family.with_param(math.exp(s + d)))
            out.append(value(f.theta, f.beta))
        return (out[0] - out[1]) / (2.0 * _SLOPE_STEP)

    huge = _POISSON_LIMIT * max(1.0, float(np.max(obj.data.y, initial=0.0)))
    if family.name == "negative_binomial" and a0 > huge:
        # The Poisson fit's means put theta.ml beyond the Poisson limit (the random
        # effects absorbed the overdispersion).  Out there the profile is flat to
        # rounding (its slope ~ 1/shape) and a search would wander on the plateau:
        # scan shapes from mean(y) up by factors of 10 and search from the best of
        # them; if the profile keeps falling all the way, the estimate is the limit.
        base_s = math.log(max(1.0, float(np.mean(obj.data.y))))
        grid = [base_s + k * math.log(10.0) for k in range(6)]
        vals = [profile(g) for g in grid]
        k_best = int(np.argmin(vals))
        falling = all(b < a for a, b in zip(vals, vals[1:])) and profile(s0) <= vals[-1]
        at_bound = True if falling else _search(profile, slope, grid[k_best])
    else:
        at_bound = _search(profile, slope, s0)
    best = min(fits, key=lambda k: fits[k].value)
    fam = family.with_param(math.exp(best))
    fit = fits[best]
    retarget(obj, fam)
    obj.pirls(fit.theta, fit.beta)  # leave the objective's warm start at the estimate
    messages = []
    if family.name == "negative_binomial" and fam.param > huge:
        at_bound = True
        messages.append(f"the shape estimate {fam.param:.4g} is effectively infinite: no "
                        "overdispersion (the likelihood rises towards the Poisson model; "
                        "fit family='poisson')")
    elif at_bound:
        what = "shape" if family.name == "negative_binomial" else "dispersion"
        messages.append(f"the {what} estimate {fam.param:.4g} is at the search limit "
                        "(the likelihood keeps increasing beyond it)")
    prof = sorted((math.exp(k), v.value) for k, v in fits.items())
    vj, se_log = joint_vcov_beta(obj, fam, fit, value_of)
    if vj is None and fit.beta.size:
        messages.append("the Hessian over (theta, beta, log parameter) is not positive "
                        "definite at the estimate")
    return ParamFit(family=fam, fit=fit, start=a0, profile=prof, at_bound=at_bound,
                    messages=messages, vcov_beta_joint=vj, se_log_param=se_log)


def _search(profile: Callable[[float], float], slope: Callable[[float], float],
            s0: float) -> bool:
    """Secant steps from ``s0``, bounded Brent where they do not settle; whether the
    estimate is at a search limit."""
    at_bound = _secant(profile, slope, s0)
    if at_bound is None:  # no convergence: bounded Brent on the profile itself
        at_bound = _brent(profile, s0)
    return at_bound


def _secant(profile: Callable[[float], float], slope: Callable[[float], float],
            s0: float, max_iter: int = 30) -> bool | None:
    """Zero of the profile's slope in ``s = log a`` by safeguarded secant steps.

    Returns whether the estimate is at a search limit, or None when the
    iteration does not settle (the caller falls back to Brent's method).
    """
    lo_b, hi_b = _LOG_BOUNDS
    s_prev = s0
    if not np.isfinite(profile(s_prev)):
        return None
    g_prev = slope(s_prev)
    s = min(max(s_prev - math.copysign(0.5, g_prev), lo_b), hi_b)
    below, above = -math.inf, math.inf  # slope < 0 at `below`, > 0 at `above`
    if g_prev < 0:
        below = s_prev
    else:
        above = s_prev
    for _ in range(max_iter):
        if not np.isfinite(profile(s)):
            return None
        g = slope(s)
        if g < 0:
            below = max(below, s)
        else:
            above = min(above, s)
        c = (g - g_prev) / (s - s_prev) if s != s_prev else math.nan
        step = -g / c if np.isfinite(c) and c > 0 else -math.copysign(1.0, g)
        step = max(-2.0, min(2.0, step))
        if abs(step) < _SECANT_TOL and np.isfinite(c) and c > 0:
            return False
        new = s + step
        if np.isfinite(below) and np.isfinite(above) and not (min(below, above) < new
                                                              < max(below, above)):
            new = 0.5 * (below + above)
        new = min(max(new, lo_b), hi_b)
        if new == s:  # pinned at a search limit
            return True
        s_prev, g_prev, s = s, g, new
    return None


def _brent(profile: Callable[[float], float], s0: float) -> bool:
    """Bounded Brent on the profile (widening the interval at its ends); returns
    whether the estimate is at a search limit."""
    lo, hi = max(s0 - _HALF_WIDTH, _LOG_BOUNDS[0]), min(s0 + _HALF_WIDTH, _LOG_BOUNDS[1])
    for _ in range(8):
        r = minimize_scalar(profile, bounds=(lo, hi), method="bounded",
                            options={"xatol": _XATOL, "maxiter": 200})
        s = float(r.x)
        near_lo, near_hi = s - lo < 1e-3, hi - s < 1e-3
        if near_lo and lo > _LOG_BOUNDS[0]:
            lo, hi = max(lo - 2 * _HALF_WIDTH, _LOG_BOUNDS[0]), lo + 1e-3
        elif near_hi and hi < _LOG_BOUNDS[1]:
            lo, hi = hi - 1e-3, min(hi + 2 * _HALF_WIDTH, _LOG_BOUNDS[1])
        else:
            return near_lo or near_hi
    return True


def joint_vcov_beta(obj: LaplaceObjective, family: Family, fit: GlmmFit,
                    value_of: Callable[[], Callable] | None = None
                    ) -> tuple[np.ndarray | None, float]:
    """``beta`` block of ``2 H^{-1}`` over ``(theta, beta, log a)`` and the SE of
    ``log a`` (central differences; parameters on a bound left out).

    ``value_of()`` gives the objective to differentiate (default ``obj``: the
    Laplace value; the AGQ one for ``nAGQ > 1``).  ``obj`` is left at ``family``.
    """
    k, p = len(fit.theta), len(fit.beta)
    if p == 0 or not np.all(np.isfinite(fit.hessian[np.ix_(fit.free, fit.free)])):
        return None, math.nan
    free = np.concatenate([fit.free, [True]])
    x0 = np.concatenate([fit.theta, fit.beta, [math.log(family.param)]])
    hd = np.diag(fit.hessian)
    h = np.full(k + p + 1, 1e-3)
    ok = np.isfinite(hd[:k + p]) & (hd[:k + p] > 0)
    h[:k + p][ok] = 1e-2 / np.sqrt(hd[:k + p][ok])
    f = value_of() if value_of is not None else obj
    idx = np.flatnonzero(free)

    def fun(v):
        x = x0.copy()
        x[idx] = v
        retarget(obj, family.with_param(math.exp(x[-1])))
        return f(x[:k], x[k:k + p])

    # the Laplace values through the gradient's block solver where there is one
    # (the engine's modes and log det, at a fraction of the cost)
    grad = laplace_gradient(obj) if value_of is None else None
    threads = small_fit_threads(DenseOrder(grad.r)) if grad is not None else nullcontext()
    try:
        obj.fast = grad.factor if grad is not None else None
        with threads:
            H = fd_hessian(fun, x0[idx], h[idx])
        if not np.all(np.isfinite(H)) or np.min(np.linalg.eigvalsh(H)) <= 0:
            return None, math.nan
        cov = 2.0 * np.linalg.inv(H)
    except (np.linalg.LinAlgError, FitError):
        return None, math.nan
    finally:
        obj.fast = None
        retarget(obj, family)
        obj.pirls(fit.theta, fit.beta)
    nth = int(np.sum(free[:k]))
    vb = cov[nth:nth + p, nth:nth + p]
    return vb, float(math.sqrt(cov[-1, -1])) if cov[-1, -1] > 0 else math.nan
