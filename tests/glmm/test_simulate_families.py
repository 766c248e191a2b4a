"""Draws from the GLMM families (R's ``family$simulate``) and ``simulate`` /
the parametric bootstrap on Gamma and negative binomial fits.

Moments of many draws are compared with the family's mean and variance written
out here (R: ``Gamma()$variance(mu) * phi / w``, ``inverse.gaussian()$variance``,
``MASS::negative.binomial(theta)$variance``, ``binomial()$variance(mu) / n``,
``poisson()$variance``), within 4 Monte Carlo standard errors.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.glmm.families import make_family

DATA = Path(__file__).resolve().parents[1] / "data" / "glmm"
N_DRAWS = 200_000
MU = np.array([0.3, 1.0, 2.5, 7.0])
PW = np.array([1.0, 2.0, 0.5, 3.0])


def _expected(name: str, param: float | None, mu: np.ndarray, w: np.ndarray):
    """(mean, variance) of one draw, written from R's family definitions."""
    if name == "gamma":  # rgamma(shape = w / phi, rate = w / (phi mu))
        return mu, param * mu ** 2 / w
    if name == "inverse_gaussian":  # SuppDists::rinvGauss(nu = mu, lambda = w / phi)
        return mu, param * mu ** 3 / w
    if name == "negative_binomial":  # MASS::rnegbin(mu, theta): weights ignored
        return mu, mu + mu ** 2 / param
    if name == "poisson":  # rpois(mu)
        return mu, mu
    p = mu / (1.0 + mu)  # binomial: rbinom(size = w, prob = p) / w
    return p, p * (1.0 - p) / w


CASES = [("gamma", 0.4, MU, PW), ("inverse_gaussian", 0.3, MU, PW),
         ("negative_binomial", 1.7, MU, np.ones(4)), ("poisson", None, MU, np.ones(4)),
         ("binomial", None, MU, np.array([1.0, 5.0, 12.0, 40.0]))]


@pytest.mark.parametrize("name,param,mu,w", CASES, ids=[c[0] for c in CASES])
def test_draw_moments_match_mean_and_variance_functions(name, param, mu, w):
    # R: mean(Gamma()$simulate-style draws) = mu, var = phi mu^2 / w (and the other
    # families' variance functions above), within 4 Monte Carlo SEs
    fam = make_family(name, None, param)
    mean, var = _expected(name, param, mu, w)
    rng = np.random.default_rng(20261202)
    draws = fam.simulate(np.tile(mean, N_DRAWS), np.tile(w, N_DRAWS), rng)
    draws = draws.reshape(N_DRAWS, len(mu)).T
    m = draws.mean(axis=1)
    np.testing.assert_array_less(np.abs(m - mean), 4.0 * np.sqrt(var / N_DRAWS))
    c = draws - m[:, None]
    s2 = (c ** 2).mean(axis=1)
    m4 = (c ** 4).mean(axis=1)
    se_var = np.sqrt((m4 - s2 ** 2) / N_DRAWS)
    np.testing.assert_array_less(np.abs(s2 - var), 4.0 * se_var)
    if name in ("negative_binomial", "poisson"):
        assert np.all(draws == np.round(draws)) and np.all(draws >= 0)
    if name in ("gamma", "inverse_gaussian"):
        assert np.all(draws > 0)


@functools.lru_cache(maxsize=None)
def fitted(column: str, family: str, link: str):
    data = pd.read_csv(DATA / "families_sim.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        return ma.glmm(f"{column} ~ x + (1|g)", data, family=family, link=link)


@pytest.mark.parametrize("column,family,link", [("y_glog", "Gamma", "log"),
                                                ("y_nb", "negative_binomial", "log"),
                                                ("y_ig", "inverse.gaussian", "log")])
def test_simulate_on_gamma_nb_and_inverse_gaussian_fits(column, family, link):
    # lme4's simulate(m, nsim, seed, use.u = TRUE): draws given the conditional modes
    # have mean fitted(m) row by row (the family's variance, 4 Monte Carlo SEs)
    res = fitted(column, family, link)
    sims = res.simulate(n=3, seed=1)
    assert sims.shape == (res.design.nobs, 3)
    assert sims.equals(res.simulate(n=3, seed=1))
    n = 4000
    cond = res.simulate(n=n, seed=2, use_random=True).to_numpy()
    mu = np.asarray(res.fittedvalues, dtype=float)
    fam = res.family
    mean, var = _expected(fam.name, fam.param, mu, np.ones_like(mu))
    z = (cond.mean(axis=1) - mean) / np.sqrt(var / n)
    assert np.all(np.abs(z) < 5.0)  # ~100 rows: 5 SE keeps the family-wise error small
    assert np.mean(np.abs(z) < 1.96) > 0.85
    if fam.name == "negative_binomial":
        assert np.all(cond == np.round(cond)) and np.all(cond >= 0)
    else:
        assert np.all(cond > 0)


def test_parametric_bootstrap_on_a_negative_binomial_fit():
    # lme4's confint(glmer.nb(y_nb ~ x + (1|g)), method = "boot", nsim = 20): runs,
    # limits ordered, the intercept and slope intervals contain their estimates
    res = fitted("y_nb", "negative_binomial", "log")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        ci = res.conf_int(method="boot", n_boot=20, seed=3)
    lo, hi = ci["ci_low"], ci["ci_high"]
    assert np.all(lo.to_numpy() < hi.to_numpy())
    assert np.all(np.isfinite(ci[["ci_low", "ci_high"]].to_numpy()))
    for name, est in res.fe_params.items():
        assert lo[name] <= est <= hi[name]
