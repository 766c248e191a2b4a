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

GLMMs are handled by :mod:`mixedanova.inference.glmm_intervals` (no ``sigma``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ..errors import ArgumentError, FitError, UnknownNameError
from ..design.formula import same_group
from .profile_structured import structured_parameters
from .profiler import Profiler, psi_from_theta, theta_from_psi, variance_parameter_names
from .satterthwaite import deviance_function_for
from .simulate import simulate_response
from .tables import check_level

__all__ = ["conf_int", "variance_parameter_names", "psi_from_theta", "theta_from_psi"]


# --------------------------------------------------------------------- profile
def _profile(res, level: float, criterion: str,
             wanted: set[str]) -> dict[str, tuple[float, float]]:
    from scipy import stats
    reml = str(criterion).upper() == "REML"
    cutoff = math.sqrt(stats.chi2.ppf(level, 1))
    out: dict[str, tuple[float, float]] = {}
    names = variance_parameter_names(res)
    need_var = any(n in wanted for n in names)
    pr = Profiler(res, reml) if need_var else None
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
    prb = pr if (pr is not None and not reml) else Profiler(res, False)
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
    sf = getattr(res.state, "structured", None)
    # a structured fit starts from its own (unconstrained) parameters, not theta
    start = res.state.theta if sf is None else sf.x
    draws = []
    failed = 0
    for _ in range(int(n_boot)):
        ystar = simulate_response(res, rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = res.model.refit(ystar, res.method, start=start, warn=False)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            failed += 1
            continue
        rf = fit.state.residual
        if sf is not None:
            cov = structured_parameters(fit)[1]
        else:
            cov = psi_from_theta(layout, fit.state.theta, fit.sigma)
        draws.append(np.concatenate([cov, [] if rf is None else rf.natural, fit.state.beta]))
    if not draws:
        raise FitError(f"every one of the {n_boot} bootstrap refits failed")
    draws = np.array(draws)
    alpha = (1.0 - level) / 2.0
    lo = np.quantile(draws, alpha, axis=0)
    hi = np.quantile(draws, 1.0 - alpha, axis=0)
    rnames = [] if res.state.residual is None else list(res.state.residual.structure.names)
    vnames = variance_parameter_names(res) if sf is None else structured_parameters(res)[0]
    if sf is not None:  # held parameters (and a held sigma) get no interval
        held = np.flatnonzero(~np.r_[sf.free, res.state.fixed_sigma is None])
        lo[held] = hi[held] = math.nan
    names = vnames + rnames + list(res.design.x_names)
    return {n: (a, b) for n, a, b in zip(names, lo, hi)}, failed


# ------------------------------------------------------------------ front end
def _select(parm, names: list[str], fnames: list[str], vnames: list[str]) -> list[str]:
    if parm is None:
        return names
    if isinstance(parm, str) and parm in ("fixed", "beta_"):
        return fnames
    if isinstance(parm, str) and parm in ("random", "theta_"):
        return vnames
    return [_parameter(n, names) for n in
            ([parm] if isinstance(parm, str) else _as_list(parm, "parm"))]


def _glmm_conf_int(res, method: str, level: float, parm, n_boot, seed,
                   progress: bool) -> pd.DataFrame:
    """:func:`conf_int` of a GLMM (:mod:`mixedanova.inference.glmm_intervals`)."""
    from scipy import stats

    from .glmm_intervals import (glmm_bootstrap_limits, glmm_estimates, glmm_parameter_names,
                                 glmm_profile_limits)
    names = glmm_parameter_names(res)
    fnames = list(res.x_names)
    vnames = names[:len(names) - len(fnames)]
    if isinstance(parm, str) and parm not in ("fixed", "beta_", "random", "theta_"):
        parm = [parm]
    if parm is not None and not isinstance(parm, str):
        # lme4's old names (.sig01, ...) of the SDs and correlations, in theta's order
        parm = [vnames[int(n[4:]) - 1] if isinstance(n, str) and n.startswith(".sig")
                and n[4:].isdigit() and 0 < int(n[4:]) <= len(vnames) else n
                for n in _as_list(parm, "parm")]
    selected = _select(parm, names, fnames, vnames)
    attrs = {"method": method, "level": level}
    if method == "wald":
        z = stats.norm.ppf(0.5 + level / 2.0)
        se = np.asarray(res.bse_fe, dtype=float)
        limits = {n: (math.nan, math.nan) for n in vnames}
        limits.update({n: (b - z * s, b + z * s) for n, b, s in
                       zip(fnames, np.asarray(res.fe_params, dtype=float), se)})
    elif method == "profile":
        limits = glmm_profile_limits(res, level, set(selected))
    else:
        n_boot = _check_n_boot(n_boot)
        seed = _check_seed(seed)
        limits, failed = glmm_bootstrap_limits(res, level, n_boot, seed, bool(progress))
        attrs.update({"n_boot": int(n_boot), "failed": failed,
                      "seed": seed if seed is None or isinstance(seed, int)
                      else type(seed).__name__})
    frame = pd.DataFrame({"estimate": glmm_estimates(res),
                          "ci_low": [limits[n][0] for n in names],
                          "ci_high": [limits[n][1] for n in names]}, index=names)
    frame = frame.loc[selected]
    frame.attrs.update(attrs)
    return frame


def conf_int(res, method: str = "wald", level: float = 0.95, *, parm=None,
             criterion: str = "ML", n_boot: int = 500, seed=None,
             progress: bool = False) -> pd.DataFrame:
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
    progress : bool
        Report the bootstrap's progress on stderr (GLMMs).

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
    if hasattr(res, "family"):  # a GLMM: no sigma, Laplace / quadrature profiles
        return _glmm_conf_int(res, "boot" if method == "bootstrap" else method, level, parm,
                              n_boot, seed, progress)
    layout = res.design.theta_layout()
    vnames = variance_parameter_names(res)
    fnames = list(res.design.x_names)
    fit = res.state.residual
    rnames = [] if fit is None else list(fit.structure.names)
    est = np.concatenate([psi_from_theta(layout, res.state.theta, res.sigma),
                          [] if fit is None else fit.natural, res.state.beta])
    names = vnames + rnames + fnames
    if getattr(res.state, "structured", None) is not None:
        # structured random-effect covariances / held parameters: fixed='s names
        # (variances, correlations), then sigma
        vnames, vest = structured_parameters(res)
        names = vnames + rnames + fnames
        est = np.concatenate([vest, [] if fit is None else fit.natural, res.state.beta])
    selected = _select(parm, names, fnames, vnames + rnames)
    limits: dict[str, tuple[float, float]]
    attrs = {"method": method, "level": level}
    if method == "wald":
        z = stats.norm.ppf(0.5 + level / 2.0)
        se = np.sqrt(np.diag(res.state.vcov_beta))
        limits = {n: (math.nan, math.nan) for n in vnames + rnames}
        limits.update({n: (b - z * s, b + z * s) for n, b, s in
                       zip(fnames, res.state.beta, se)})
    elif method == "profile":
        if res.state.fixed_sigma is not None and getattr(res.state, "structured", None) is None:
            from ..errors import FitError
            raise FitError("method='profile' intervals profile sigma out, which a fit with "
                           "fixed={'sigma': ...} holds fixed; use method='boot' or 'wald'")
        if res.method not in ("REML", "ML"):
            raise ArgumentError(f"method='profile' needs a REML or ML fit, not "
                                f"method={res.method!r}")
        if not isinstance(criterion, str) or criterion.upper() not in ("ML", "REML"):
            raise ArgumentError(f"criterion must be 'ML' or 'REML', not {criterion!r}")
        from ..likelihood.threads import small_fit_threads
        # many small refits: one BLAS thread (a second one only spins, and under
        # load makes them ten times slower; benchmarks/bench_profile.py)
        if getattr(res.state, "structured", None) is not None:
            if fit is not None:
                raise FitError("method='profile' intervals are not available for structured "
                               "random-effect covariances or held parameters together with a "
                               "residual structure; use method='boot' or 'wald'")
            from .profile_structured import structured_profile_intervals
            with small_fit_threads(deviance_function_for(res, False).system):
                limits = structured_profile_intervals(res, level, criterion, set(selected))
        elif fit is not None:
            from .profile_residual import structure_profile_intervals
            limits = structure_profile_intervals(res, level, criterion, set(selected))
        else:
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
                          "ci_low": [limits.get(n, (math.nan,))[0] for n in names],
                          "ci_high": [limits.get(n, (0, math.nan))[1] for n in names]},
                         index=names)
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
