"""Nakagawa's R2 and the intraclass correlation (``performance::r2_nakagawa``,
``performance::icc``, with ``insight::get_variance``'s components), Gaussian
linear mixed models.

* ``var_fixed``: sample variance (``n - 1``) of ``X beta`` over the rows used.
* ``var_random``: per random term the mean over rows of ``z_i' Sigma z_i``, summed
  over terms (``Sigma`` the term's ``VarCorr`` matrix, ``z_i`` the row's values of
  the term's columns).  For ``(1|g)`` this is the intercept variance; with random
  slopes it averages over the observed covariate values (insight's method).
* ``var_residual``: ``sigma^2``.

``R2_marginal = vf / (vf + vr + ve)``, ``R2_conditional = (vf + vr) / (vf + vr + ve)``,
``ICC_adjusted = vr / (vr + ve)``, ``ICC_unadjusted = vr / (vf + vr + ve)``; by
group: the intercept variance of the group over ``vr + ve``.

insight takes the slope columns ``z_i`` from the *fixed-effects* model matrix;
here they come from the random term's own model matrix, which is the same
whenever the slope variable is also a fixed effect (the usual case).

GLMMs (a results object with a ``family``), as performance 0.10.2 / insight
0.19.0: ``var_residual`` is the distribution-specific variance plus the
variance of observation-level random terms (a term with as many levels as
observations, which insight counts as dispersion, not in ``var_random``).  The
distribution-specific variance is ``pi^2 / 3`` (binomial logit), 1 (probit),
``pi^2 / 6`` (cloglog); for Poisson with the log link the lognormal
approximation ``log(1 + 1 / mu)`` with ``mu = exp(b0)``, ``b0`` the intercept of
the null model (the same random terms and offset, fixed part ``1``, refitted),
and 0.25 for the square-root link.  Negative binomial (log link): the same with
the NB variance, ``log(1 + 1 / mu + 1 / k)``, ``k`` the model's shape (the null
model re-estimates its own shape for ``b0``), 0.25 for the square-root link.
Gamma (inverse, identity, log): ``sigma^2``, the dispersion ``phi`` (insight:
``family(m)$variance(sigma(m))``; glmmTMB's ``sigma(m)`` is ``sqrt(phi)``).  Other
families and links raise an error (performance has no definition for them).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import ArgumentError

__all__ = ["variance_components", "row_variances", "r2_nakagawa", "icc", "distribution_variance"]


def distribution_variance(res) -> float:
    """The distribution-specific variance of a GLMM (see the module docstring)."""
    fam = res.family
    link = fam.link.name
    if fam.name == "binomial" and link in ("logit", "probit", "cloglog"):
        return {"logit": math.pi ** 2 / 3.0, "probit": 1.0, "cloglog": math.pi ** 2 / 6.0}[link]
    count = fam.name in ("poisson", "negative_binomial")
    if count and link == "sqrt":
        return 0.25
    if count and link == "log":
        b0 = float(res.null_model().fe_params.iloc[0])
        extra = 1.0 / res.nb_shape if fam.name == "negative_binomial" else 0.0
        return math.log1p(math.exp(-b0) + extra)
    if fam.name == "gamma" and link in ("inverse", "identity", "log"):
        return float(res.dispersion)
    raise ArgumentError(f"R2 and ICC are defined (performance::r2_nakagawa) for binomial "
                        f"(logit, probit, cloglog), Poisson and negative binomial (log, "
                        f"sqrt) and Gamma (inverse, identity, log) GLMMs, not "
                        f"{fam.name} with the {link} link")


def row_variances(design, beta: np.ndarray, covs: list[np.ndarray]) -> tuple[float, list]:
    """Sample variance (``n - 1``) of ``X beta`` over the rows used, and per random
    term the mean over rows of ``z_i' Sigma z_i`` (``covs``: the terms' ``VarCorr``
    matrices)."""
    eta = design.X @ beta
    var_fixed = float(np.var(eta, ddof=1)) if design.nobs > 1 else 0.0
    per_term = [float(np.mean(np.einsum("ij,jk,ik->i", b.zraw, S, b.zraw)))
                for b, S in zip(design.blocks, covs)]
    return var_fixed, per_term


def variance_components(res) -> dict:
    """``var_fixed, var_random, var_residual`` and the per-group intercept variances."""
    d = res.design
    glmm = hasattr(res, "family")
    covs = res._term_covariances()
    beta = np.asarray(res.fe_params, dtype=float)
    # a fit without rows (a Dask fit) computes these in a pass over its partitions
    rows_elsewhere = getattr(res, "_prediction_variances", None)
    var_fixed, per_term = (row_variances(d, beta, covs) if rows_elsewhere is None
                           else rows_elsewhere(beta, covs))
    var_random = var_dispersion = 0.0
    intercepts: dict[str, float] = {}
    for b, name, S, v in zip(d.blocks, d.group_names, covs, per_term):
        if glmm and b.nlev == d.nobs:  # an observation-level term: dispersion (insight)
            var_dispersion += v
        else:
            var_random += v
        if "(Intercept)" in b.columns:
            j = b.columns.index("(Intercept)")
            intercepts[name] = float(S[j, j])
    if glmm:
        var_dist = distribution_variance(res)
        return {"var_fixed": var_fixed, "var_random": var_random,
                "var_residual": var_dist + var_dispersion, "var_distribution": var_dist,
                "var_dispersion": var_dispersion, "var_intercept": intercepts}
    return {"var_fixed": var_fixed, "var_random": var_random,
            "var_residual": res.sigma ** 2, "var_intercept": intercepts}


def r2_nakagawa(res) -> pd.Series:
    """``R2_marginal`` and ``R2_conditional`` (``performance::r2_nakagawa``)."""
    v = variance_components(res)
    total = v["var_fixed"] + v["var_random"] + v["var_residual"]
    return pd.Series({"R2_marginal": v["var_fixed"] / total,
                      "R2_conditional": (v["var_fixed"] + v["var_random"]) / total},
                     name="r2_nakagawa")


def icc(res, by_group: bool = False) -> pd.Series:
    """``ICC_adjusted`` and ``ICC_unadjusted`` (``performance::icc``); with
    ``by_group=True`` one ICC per grouping factor (intercept variance over
    ``var_random + var_residual``, ``performance::icc(m, by_group = TRUE)``)."""
    v = variance_components(res)
    vr, ve = v["var_random"], v["var_residual"]
    if by_group:
        return pd.Series({g: s / (vr + ve) for g, s in v["var_intercept"].items()},
                         name="ICC")
    total = v["var_fixed"] + vr + ve
    return pd.Series({"ICC_adjusted": vr / (vr + ve), "ICC_unadjusted": vr / total},
                     name="icc")
