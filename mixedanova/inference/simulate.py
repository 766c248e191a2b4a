"""Responses simulated from a fitted model (lme4's ``simulate.merMod``).

One simulator serves :meth:`LinearMixedResults.simulate` and the parametric
bootstrap (:mod:`mixedanova.inference.intervals`).  A draw is

    y* = X beta + offset + Z b* + e*,   e*_i ~ N(0, sigma^2 / w_i)

with ``b*`` new random effects ``N(0, Sigma)`` (lme4's default ``use.u = FALSE``)
or the fitted conditional modes (``use_random=True``, lme4's ``use.u = TRUE``).

For a GLMM (a results object with a ``family``) the draw is from the family at
``mu = linkinv(X beta + offset + Z b*)``: binomial successes out of the trials
(the prior weights; returned as proportions, the scale the fit uses, so that a
0/1 response stays 0/1), Poisson counts, Gamma, inverse Gaussian and negative
binomial draws (:meth:`mixedanova.glmm.families.Family.simulate`, R's
``family$simulate`` conventions).  lme4 draws the same way.
With a residual structure ``e*`` has covariance ``sigma^2 Rrel`` (AR1, CAR1,
compound symmetry, variance functions, a visit correlation: the structure's
whitener solved against independent normals), or a marginal model's visit
covariance.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import MixedAnovaError

__all__ = ["simulate_response", "simulate", "structured_noise"]


def structured_noise(structure, u: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``W^{-1} z`` for the structure's whitener ``W`` (``W'W = Rrel^{-1}``): from
    independent standard normals ``z``, errors with covariance ``Rrel(u)``
    (AR1, CAR1, compound symmetry, variance functions, visit correlations)."""
    from scipy.sparse.linalg import spsolve

    W, logdet = structure.whitener(u, len(z))
    if not np.isfinite(logdet):
        raise MixedAnovaError("the residual structure's parameters are outside their space")
    if isinstance(W, np.ndarray):
        return z / W
    return np.asarray(spsolve(W.tocsc(), z), dtype=float)


def _glmm_response(res, rng: np.random.Generator, use_random: bool) -> np.ndarray:
    d = res.design
    eta = d.X @ np.asarray(res.fe_params, dtype=float) + d.offset_values
    templates = d.theta_layout().templates(res.theta)
    modes = res.conditional_modes()
    for k, (b, T) in enumerate(zip(d.blocks, templates)):
        bk = modes[k] if use_random else rng.standard_normal((b.nlev, b.q)) @ T.T
        eta = eta + np.einsum("ij,ij->i", b.zraw, bk[b.codes])
    fam = res.family
    return np.asarray(fam.simulate(fam.link.linkinv(eta), res.data.pw, rng), dtype=float)


def simulate_response(res, rng: np.random.Generator, use_random: bool = False) -> np.ndarray:
    """One simulated response vector for the rows of the fit."""
    if hasattr(res, "family"):
        return _glmm_response(res, rng, use_random)
    d = res.design
    sigma = res.sigma
    y = d.X @ res.state.beta + d.offset_values
    fit = res.state.residual
    if fit is not None and hasattr(fit.structure, "draw"):  # a marginal model's visit covariance
        e = fit.structure.draw(fit.u, rng)
    elif fit is not None:
        e = sigma * structured_noise(fit.structure, fit.u, rng.standard_normal(d.nobs))
    else:
        e = sigma * rng.standard_normal(d.nobs)
    y = y + e / np.sqrt(d.prior_weights)
    templates = d.theta_layout().templates(res.state.theta)
    for k, (b, T) in enumerate(zip(d.blocks, templates)):
        if use_random:
            bk = res._blups[k]
        else:
            bk = sigma * rng.standard_normal((b.nlev, b.q)) @ T.T
        y = y + np.einsum("ij,ij->i", b.zraw, bk[b.codes])
    return y


def simulate(res, n: int = 1, seed=None, use_random: bool = False) -> pd.DataFrame:
    """``n`` simulated responses as columns ``sim_1 ... sim_n`` (rows of the fit).

    Parameters
    ----------
    res : LinearMixedResults
    n : int
        Number of draws.
    seed : int or numpy.random.Generator, optional
        Passed to ``numpy.random.default_rng``; the same seed gives the same draws.
    use_random : bool
        Condition on the fitted random effects (lme4's ``use.u = TRUE``) instead of
        drawing new ones (the default, as lme4).
    """
    n = int(n)
    if n < 1:
        raise MixedAnovaError(f"n must be a positive number of draws, not {n}")
    rng = np.random.default_rng(seed)
    draws = np.column_stack([simulate_response(res, rng, use_random) for _ in range(n)])
    return pd.DataFrame(draws, index=res.design.row_index,
                        columns=[f"sim_{i + 1}" for i in range(n)])
