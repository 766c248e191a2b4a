"""Profile zeta curves (lme4's ``profile(m)``), the numbers behind ``plot_profile``.

For a parameter ``psi`` (an SD, a correlation, ``sigma`` or a fixed effect),
``zeta(psi) = sign(psi - psi_hat) sqrt(dev_profile(psi) - dev_min)`` where the
profiled deviance minimizes over all other parameters (see
:mod:`mixedanova.inference.intervals`, which finds where ``|zeta|`` crosses a
cutoff).  Here ``zeta`` is evaluated on a grid from the estimate out to the
``level`` profile limits on each side, warm-starting each point from its
neighbour, as lme4 walks out from the optimum (and also from the optimum
itself, keeping the lower deviance: a warm start on a bound can stay stuck).  A linear zeta plot means a
quadratic profile, i.e. Wald intervals are adequate on that scale.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import MixedAnovaError
from .glmm_intervals import GlmmProfiler, glmm_parameter_names, profile_step
from .profiler import Profiler, bracket_interval, variance_parameter_names

__all__ = ["profile_zeta"]


def _walk(zeta, est: float, limits: tuple[float, float], npoints: int,
          reset) -> list[tuple[float, float]]:
    """zeta from the estimate out to each limit (``reset()`` restarts at the optimum)."""
    pts = [(est, 0.0)]
    for limit in limits:
        if not np.isfinite(limit) or limit == est:
            continue
        reset()
        for k in range(1, npoints + 1):
            v = est + (limit - est) * k / npoints
            pts.append((v, zeta(v)))
    return sorted(pts)


def profile_zeta(res, parm: str | list[str] | None = None, *, criterion: str = "ML",
                 level: float = 0.99, npoints: int = 8) -> pd.DataFrame:
    """Zeta of each parameter on a grid (lme4's ``as.data.frame(profile(m))``).

    Parameters
    ----------
    res : LinearMixedResults
    parm : str or list of str, optional
        Parameter names as in :meth:`conf_int` (``"sd_(Intercept)|Batch"``,
        ``"sigma"``, fixed-effect names), or ``"random"`` / ``"fixed"``; default
        all variance parameters and fixed effects.
    criterion : {"ML", "REML"}
        Deviance profiled (lme4 profiles the ML deviance; fixed effects always
        use ML).
    level : float
        The grid runs out to the profile interval of this level on each side.
    npoints : int
        Points per side.

    Returns
    -------
    DataFrame
        Columns ``parameter``, ``value``, ``zeta``; ``attrs["estimates"]``
        maps each parameter to its estimate, ``attrs["level"]`` the level.
    """
    if not 0 < level < 1:
        raise MixedAnovaError(f"level must be in (0, 1), got {level!r}")
    if hasattr(res, "family"):
        return _glmm_zeta(res, parm, level, npoints)
    if getattr(res.state, "residual", None) is not None or \
            getattr(getattr(res, "model", None), "marginal", False):
        raise MixedAnovaError(
            "profile(): zeta tables are computed for random-effects variances and fixed "
            "effects without a residual structure (residual=) or visit covariance; "
            "conf_int(method='profile') gives this model's profile intervals")
    var_names = variance_parameter_names(res)
    fixed_names = list(res.design.x_names)
    if parm is None:
        wanted = var_names + fixed_names
    elif parm == "random":
        wanted = var_names
    elif parm == "fixed":
        wanted = fixed_names
    else:
        wanted = [parm] if isinstance(parm, str) else list(parm)
        unknown = [p for p in wanted if p not in var_names + fixed_names]
        if unknown:
            raise MixedAnovaError(f"unknown parameter(s) {unknown}; available: "
                             f"{', '.join(var_names + fixed_names)}")
    cutoff = math.sqrt(stats.chi2.ppf(level, 1))
    rows: list[tuple[str, float, float]] = []
    estimates: dict[str, float] = {}
    reml = str(criterion).upper() == "REML"
    if any(p in var_names for p in wanted):
        pr = Profiler(res, reml)
        for c, name in enumerate(var_names):
            if name not in wanted:
                continue
            est = float(pr.psi_hat[c])
            state = {"start": pr.psi_hat.copy()}

            def zeta(v, c=c, est=est, state=state):
                # warm start from the previous point, and a cold start from the
                # optimum: a warm start sitting on a bound (SD 0) can stay stuck there
                val, psi = min(pr.profile_var(c, v, state["start"]),
                               pr.profile_var(c, v, pr.psi_hat.copy()), key=lambda t: t[0])
                if np.isfinite(val):
                    state["start"] = psi
                return math.copysign(math.sqrt(max(val - pr.dev_min, 0.0)), v - est)

            step = 0.1 if pr.cor[c] else 0.25 * max(abs(est), 1e-3 * pr.psi_hat[-1])
            limits = pr.interval(zeta, est, pr.lower[c], pr.upper[c], step, cutoff)
            def reset(state=state):
                state["start"] = pr.psi_hat.copy()

            for v, z in _walk(zeta, est, limits, npoints, reset):
                rows.append((name, v, z))
            estimates[name] = est
    if any(p in fixed_names for p in wanted):
        prb = Profiler(res, False)
        beta_hat = prb.fit.state.beta
        se = np.sqrt(np.diag(prb.fit.state.vcov_beta))
        for j, name in enumerate(fixed_names):
            if name not in wanted:
                continue
            state = {"start": prb.fit.state.theta.copy()}

            def zeta_b(v, j=j, state=state):
                val, theta = min(prb.profile_beta(j, v, state["start"]),
                                 prb.profile_beta(j, v, prb.fit.state.theta.copy()),
                                 key=lambda t: t[0])
                if np.isfinite(val):
                    state["start"] = theta
                return math.copysign(math.sqrt(max(val - prb.dev_min, 0.0)), v - beta_hat[j])

            est = float(beta_hat[j])
            limits = prb.interval(zeta_b, est, -np.inf, np.inf, float(se[j]), cutoff)
            def reset_b(state=state):
                state["start"] = prb.fit.state.theta.copy()

            for v, z in _walk(zeta_b, est, limits, npoints, reset_b):
                rows.append((name, v, z))
            estimates[name] = est
    out = pd.DataFrame(rows, columns=["parameter", "value", "zeta"])
    out["parameter"] = out["parameter"].astype(object)
    out.attrs["estimates"] = estimates
    out.attrs["level"] = level
    return out


def _glmm_zeta(res, parm, level: float, npoints: int) -> pd.DataFrame:
    """:func:`profile_zeta` of a GLMM: its Laplace / quadrature ``-2 log L``
    profiled over all other parameters
    (:class:`~mixedanova.inference.glmm_intervals.GlmmProfiler`)."""
    if res.nagq == 0:
        raise MixedAnovaError("profile() needs a Laplace or quadrature fit, not nAGQ = 0")
    names = glmm_parameter_names(res)
    nvar = len(names) - len(res.x_names)
    if parm is None:
        wanted = names
    elif parm in ("random", "fixed"):
        wanted = names[:nvar] if parm == "random" else names[nvar:]
    else:
        wanted = [parm] if isinstance(parm, str) else list(parm)
        unknown = [p for p in wanted if p not in names]
        if unknown:
            raise MixedAnovaError(f"unknown parameter(s) {unknown}; available: "
                                  f"{', '.join(names)}")
    cutoff = math.sqrt(stats.chi2.ppf(level, 1))
    pr = GlmmProfiler(res)
    rows: list[tuple[str, float, float]] = []
    estimates: dict[str, float] = {}
    for c, name in enumerate(names):
        if name not in wanted:
            continue
        est = float(pr.x_hat[c])
        state = {"start": pr.x_hat.copy()}

        def zeta(v, c=c, est=est, state=state):
            val, x = pr.profile(c, v, state["start"])
            if np.isfinite(val):
                state["start"] = x
            return math.copysign(math.sqrt(max(val - pr.dev_min, 0.0)), v - est)

        def reset(state=state):
            state["start"] = pr.x_hat.copy()

        limits = bracket_interval(zeta, est, pr.lower[c], pr.upper[c], profile_step(pr, c),
                                  cutoff)
        for v, z in _walk(zeta, est, limits, npoints, reset):
            rows.append((name, v, z))
        estimates[name] = est
    out = pd.DataFrame(rows, columns=["parameter", "value", "zeta"])
    out["parameter"] = out["parameter"].astype(object)
    out.attrs["estimates"] = estimates
    out.attrs["level"] = level
    return out
