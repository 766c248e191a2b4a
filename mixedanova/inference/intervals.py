"""Confidence intervals for the fixed effects, the random-effect SDs and
correlations and the residual SD: lme4's ``confint.merMod``.

Parameters follow lme4's ``confint(m, oldNames = FALSE)``: per random-effects
term (design order) ``sd_<col>|<group>`` and ``cor_<col_i>.<col_j>|<group>`` in
the order of ``theta`` (lower triangle, column by column), then ``sigma``, then
the fixed effects (formulaic names).

* ``"wald"``: ``beta +- z sd(beta)`` for the fixed effects (normal quantile, as
  lme4); the variance parameters get NaN, as in lme4.
* ``"profile"``: the likelihood-ratio (profile) interval.  For each parameter
  ``psi`` in the SD/correlation scale, ``zeta(psi) = sign(psi - psi_hat)
  sqrt(dev_profile(psi) - dev_min)`` is computed by minimizing the deviance
  over all other parameters, and the interval is where ``|zeta|`` is below
  ``sqrt(qchisq(level, 1))``.  The endpoints are found by root finding (lme4
  interpolates a spline through profile points; the two agree to the accuracy
  of that spline).  By default the **ML deviance** is profiled even for a REML
  fit, as lme4 does (``profile()`` refits with ML), so the intervals of a REML
  fit equal those of the ML fit; ``criterion="REML"`` profiles the REML
  criterion for the variance parameters instead.  Fixed effects are always
  profiled on the ML deviance (the REML criterion does not depend on them).
  A variance parameter whose profile does not reach the cutoff before its
  bound (SD 0, correlation +-1) gets the bound as its limit.
* ``"boot"``: parametric bootstrap (lme4's ``bootMer``): ``n_boot`` responses
  simulated from the fitted model with a seeded generator, refitted by the same
  method, percentile intervals (``numpy.quantile``, linear interpolation).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ..errors import ArgumentError, FitError, UnknownNameError
from ..design.formula import same_group
from .satterthwaite import deviance_function_for
from .simulate import simulate_response
from .tables import check_level
from .warm_newton import central_gradient, warm_newton

__all__ = ["conf_int", "variance_parameter_names", "psi_from_theta", "theta_from_psi"]

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


def _is_cor(res) -> np.ndarray:
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


def _psd_cholesky(C: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero pivots allowed)."""
    q = C.shape[0]
    L = np.zeros_like(C)
    for j in range(q):
        d = C[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-14 * max(C[j, j], 1e-300):
            continue
        L[j, j] = math.sqrt(d)
        for i in range(j + 1, q):
            L[i, j] = (C[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
    return L


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
        T = _psd_cholesky(np.outer(sd, sd) * R) / sigma
        k = off
        for j in range(q):
            for i in range(j, q):
                theta[k] = T[i, j]
                k += 1
        pos = k
    return theta, sigma


# --------------------------------------------------------------------- helpers
def _minimize(fun, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray,
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


class _Profiler:
    """Profiles of the deviance in lme4's SD/correlation/sigma and fixed-effect scales."""

    def __init__(self, res, reml: bool) -> None:
        self.res = res
        self.layout = res.design.theta_layout()
        self.dev = deviance_function_for(res, reml)
        self.fit = _fit_by(res, reml)
        self.psi_hat = psi_from_theta(self.layout, self.fit.state.theta, self.fit.sigma)
        # the minimum of the engine's own criterion (a fit's reported objective
        # also holds the prior weights' constant, which the profile does not see)
        self.dev_min = float(self.dev(self.fit.state.theta))
        self.cor = _is_cor(res)
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

        x, val = _minimize(f, start[free] / sc, self.lower[free] / sc, self.upper[free] / sc,
                           self._curvature.setdefault(("var", c), {}))
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

        x, val = _minimize(f, start, lower, np.full(lower.size, np.inf),
                           self._curvature.setdefault(("beta", j), {}))
        return val, x

    def interval(self, zeta, est: float, lo_bound: float, hi_bound: float, step: float,
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


def _profile(res, level: float, criterion: str,
             wanted: set[str]) -> dict[str, tuple[float, float]]:
    from scipy import stats
    reml = str(criterion).upper() == "REML"
    cutoff = math.sqrt(stats.chi2.ppf(level, 1))
    out: dict[str, tuple[float, float]] = {}
    names = variance_parameter_names(res)
    need_var = any(n in wanted for n in names)
    pr = _Profiler(res, reml) if need_var else None
    for c, name in enumerate(names):
        if name not in wanted:
            out[name] = (math.nan, math.nan)
            continue
        est = pr.psi_hat[c]
        done: list[tuple[float, np.ndarray]] = [(est, pr.psi_hat.copy())]

        def zeta(v, c=c, est=est, done=done):
            # warm start from the nearest point profiled so far; where that ends
            # on a bound, also from the optimum, keeping the lower: a warm start
            # can sit in a second basin (a variance at 0) and make zeta depend on
            # the path, which the root finder cannot take
            start = min(done, key=lambda t: abs(t[0] - v))[1]
            val, psi = pr.profile_var(c, v, start)
            if len(done) > 1 and (not np.isfinite(val) or pr.on_bound(psi, c)):
                val2, psi2 = pr.profile_var(c, v, pr.psi_hat)
                if val2 < val or not np.isfinite(val):
                    val, psi = val2, psi2
            if np.isfinite(val):
                done.append((v, psi))
            d = max(val - pr.dev_min, 0.0)
            return math.copysign(math.sqrt(d), v - est)

        step = 0.1 if pr.cor[c] else 0.25 * max(abs(est), 1e-3 * pr.psi_hat[-1])
        lo, hi = pr.interval(zeta, est, pr.lower[c], pr.upper[c], step, cutoff)
        out[name] = (lo, hi)
    if not any(n in wanted for n in res.design.x_names):
        out.update({n: (math.nan, math.nan) for n in res.design.x_names})
        return out
    prb = pr if (pr is not None and not reml) else _Profiler(res, False)
    beta_hat = prb.fit.state.beta
    se = np.sqrt(np.diag(prb.fit.state.vcov_beta))
    for j, name in enumerate(res.design.x_names):
        if name not in wanted:
            out[name] = (math.nan, math.nan)
            continue
        done_b: list[tuple[float, np.ndarray]] = [(float(beta_hat[j]),
                                                   prb.fit.state.theta.copy())]

        def zeta_b(v, j=j, done_b=done_b):
            start = min(done_b, key=lambda t: abs(t[0] - v))[1]
            val, theta = prb.profile_beta(j, v, start)
            if np.isfinite(val):
                done_b.append((v, theta))
            d = max(val - prb.dev_min, 0.0)
            return math.copysign(math.sqrt(d), v - beta_hat[j])

        out[name] = prb.interval(zeta_b, float(beta_hat[j]), -np.inf, np.inf,
                                 float(se[j]), cutoff)
    return out


# ------------------------------------------------------------------- bootstrap
def _bootstrap(res, level: float, n_boot: int, seed) -> tuple[dict, int]:
    if res.method not in ("REML", "ML"):
        raise ArgumentError(f"method='boot' (parametric bootstrap) needs a REML or ML fit, "
                            f"not method={res.method!r}")
    rng = np.random.default_rng(seed)
    layout = res.design.theta_layout()
    draws = []
    failed = 0
    for _ in range(int(n_boot)):
        ystar = simulate_response(res, rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = res.model.refit(ystar, res.method, start=res.state.theta, warn=False)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            failed += 1
            continue
        draws.append(np.concatenate([psi_from_theta(layout, fit.state.theta, fit.sigma),
                                     fit.state.beta]))
    if not draws:
        raise FitError(f"every one of the {n_boot} bootstrap refits failed")
    draws = np.array(draws)
    alpha = (1.0 - level) / 2.0
    lo = np.quantile(draws, alpha, axis=0)
    hi = np.quantile(draws, 1.0 - alpha, axis=0)
    names = variance_parameter_names(res) + list(res.design.x_names)
    return {n: (a, b) for n, a, b in zip(names, lo, hi)}, failed


# ------------------------------------------------------------------ front end
def conf_int(res, method: str = "wald", level: float = 0.95, *, parm=None,
             criterion: str = "ML", n_boot: int = 500, seed=None) -> pd.DataFrame:
    """Confidence intervals as lme4's ``confint(m, method = ...)``.

    Parameters
    ----------
    res : LinearMixedResults
    method : {"wald", "profile", "boot"}
    level : float
    parm : None, "fixed", "random" or list of str
        Which parameters (all by default; ``"random"`` = SDs, correlations and sigma).
    criterion : {"ML", "REML"}
        Deviance profiled for the variance parameters (``method="profile"``).
    n_boot : int
        Bootstrap replicates (``method="boot"``).
    seed : int or numpy.random.Generator, optional
        Seed of the bootstrap generator (``numpy.random.default_rng(seed)``).

    Returns
    -------
    pandas.DataFrame
        Indexed by parameter, columns ``estimate`` (the fit's estimates), ``ci_low``,
        ``ci_high``; ``attrs`` holds ``method``, ``level`` and method details.
    """
    from scipy import stats
    if not isinstance(method, str) or method.lower() not in _METHODS:
        raise ArgumentError(f"method must be 'wald', 'profile' or 'boot', not {method!r}")
    method = method.lower()
    level = check_level(level)
    layout = res.design.theta_layout()
    vnames = variance_parameter_names(res)
    fnames = list(res.design.x_names)
    est = np.concatenate([psi_from_theta(layout, res.state.theta, res.sigma),
                          res.state.beta])
    names = vnames + fnames
    if parm is None:
        selected = names
    elif isinstance(parm, str) and parm in ("fixed", "beta_"):
        selected = fnames
    elif isinstance(parm, str) and parm in ("random", "theta_"):
        selected = vnames
    else:
        selected = [_parameter(n, names) for n in
                    ([parm] if isinstance(parm, str) else _as_list(parm, "parm"))]
    limits: dict[str, tuple[float, float]]
    attrs = {"method": method, "level": level}
    if method != "wald" and res.state.extra.get("residual") is not None:
        from ..errors import FitError
        raise FitError(f"method={method!r} intervals are not available for models with a "
                       "residual structure (residual=); use method='wald', and "
                       "res.residual_intervals() for the structure's parameters")
    if method == "wald":
        z = stats.norm.ppf(0.5 + level / 2.0)
        se = np.sqrt(np.diag(res.state.vcov_beta))
        limits = {n: (math.nan, math.nan) for n in vnames}
        limits.update({n: (b - z * s, b + z * s) for n, b, s in
                       zip(fnames, res.state.beta, se)})
    elif method == "profile":
        if res.method not in ("REML", "ML"):
            raise ArgumentError(f"method='profile' needs a REML or ML fit, not "
                                f"method={res.method!r}")
        if not isinstance(criterion, str) or criterion.upper() not in ("ML", "REML"):
            raise ArgumentError(f"criterion must be 'ML' or 'REML', not {criterion!r}")
        from ..likelihood.threads import small_fit_threads
        # many small refits: one BLAS thread (a second one only spins, and under
        # load makes them ten times slower; benchmarks/bench_profile.py)
        with small_fit_threads(deviance_function_for(res, False).system):
            limits = _profile(res, level, criterion, set(selected))
        attrs["criterion"] = str(criterion).upper()
    elif method in ("boot", "bootstrap"):
        n_boot = _check_n_boot(n_boot)
        seed = _check_seed(seed)
        limits, failed = _bootstrap(res, level, n_boot, seed)
        # attrs hold scalars only (pd.concat compares them): a Generator is named
        attrs.update({"n_boot": int(n_boot), "failed": failed,
                      "seed": seed if seed is None or isinstance(seed, int)
                      else type(seed).__name__})
    frame = pd.DataFrame({"estimate": est,
                          "ci_low": [limits[n][0] for n in names],
                          "ci_high": [limits[n][1] for n in names]}, index=names)
    frame = frame.loc[selected]
    frame.attrs.update(attrs)
    return frame


_METHODS = ("wald", "profile", "boot", "bootstrap")


def _as_list(value, name: str) -> list:
    try:
        return list(value)
    except TypeError:
        raise ArgumentError(f"{name} must be None, 'fixed', 'random', a parameter name or a "
                            f"list of them, not {value!r}") from None


def _parameter(name, names: list[str]) -> str:
    """``name`` as one of ``names``; the grouping factor may be spelled with its
    factors in another order (``sd_(Intercept)|batch:sample``)."""
    if name in names:
        return name
    if isinstance(name, str) and "|" in name:
        head, group = name.rsplit("|", 1)
        for n in names:
            if "|" in n:
                h, g = n.rsplit("|", 1)
                if h == head and same_group(group, g):
                    return n
    raise UnknownNameError(f"parm names unknown parameter {name!r}; the parameters are "
                           f"{', '.join(map(repr, names))}")


def _check_n_boot(n_boot) -> int:
    if isinstance(n_boot, (bool, np.bool_)) or not isinstance(n_boot, (int, np.integer)) \
            or n_boot < 2:
        raise ArgumentError(f"n_boot must be an integer of at least 2 (bootstrap "
                            f"replicates), not {n_boot!r}")
    return int(n_boot)


def _check_seed(seed):
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
            or seed < 0:
        raise ArgumentError(f"seed must be None, a non-negative integer or a "
                            f"numpy.random.Generator, not {seed!r}")
    return int(seed)
