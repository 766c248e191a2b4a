"""Profile and bootstrap intervals, and simulation, for fits with a residual structure
(issue 21).

nlme's ``intervals()`` are Wald intervals on a transformed scale, not profile ones, so
the profile intervals are checked by their defining property: with every other
parameter re-optimized (here by an independent dense REML criterion and scipy, or by a
refit holding the parameter fixed), the criterion at each endpoint is
``qchisq(0.95, 1)`` above its minimum, and the interval contains the estimate.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import mixedanova as ma

CUT = float(stats.chi2.ppf(0.95, 1))   # R: qchisq(0.95, 1)


@pytest.fixture(scope="module")
def ovary_ar1():
    d = ma.load_dataset("ovary")
    res = ma.lmm("follicles ~ sin2pit + cos2pit + (1|Mare)", d,
                 residual=ma.AR1(group="Mare", order="time_index"))
    return d, res


def _dense_reml(d):
    """-2 REML log-likelihood of follicles ~ sin2pit + cos2pit + (1|Mare) with
    corAR1(form = ~ time_index | Mare) at (sd_Mare, sigma, phi), from each mare's dense
    ``V_g = sd^2 J + sigma^2 phi^|t_i - t_j|`` (V is block diagonal over mares)."""
    X = np.column_stack([np.ones(len(d)), d["sin2pit"], d["cos2pit"]])
    y = d["follicles"].to_numpy(float)
    t = d["time_index"].to_numpy(float)
    blocks = [np.flatnonzero(d["Mare"].to_numpy() == m) for m in d["Mare"].unique()]
    lags = [np.abs(t[b][:, None] - t[b][None, :]) for b in blocks]
    n, p = X.shape

    def crit(sb, s, phi):
        if sb < 0 or s <= 0 or not -1 < phi < 1:
            return math.inf
        logdet, xw, yw = 0.0, [], []
        for b, lag in zip(blocks, lags):
            L = np.linalg.cholesky(sb * sb + s * s * phi ** lag)
            logdet += 2 * np.log(np.diag(L)).sum()
            xw.append(np.linalg.solve(L, X[b]))
            yw.append(np.linalg.solve(L, y[b]))
        Xw, ywv = np.vstack(xw), np.concatenate(yw)
        beta, *_ = np.linalg.lstsq(Xw, ywv, rcond=None)
        r = ywv - Xw @ beta
        return logdet + np.linalg.slogdet(Xw.T @ Xw)[1] + r @ r + (n - p) * math.log(2 * math.pi)
    return crit


def _min_over(crit, fixed_index, value, x0):
    """Minimum of ``crit`` over the parameters other than ``fixed_index``."""
    others = [i for i in range(3) if i != fixed_index]

    def f(z):
        x = np.empty(3)
        x[fixed_index] = value
        x[others] = z
        return crit(*x)

    best = optimize.minimize(f, np.asarray(x0)[others], method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    return float(best.fun)


def test_profile_endpoints_are_the_chisquare_cutoff_above_the_optimum(ovary_ar1):
    d, res = ovary_ar1
    ci = res.conf_int(method="profile", criterion="REML",
                      parm=["sd_(Intercept)|Mare", "sigma", "phi"])
    crit = _dense_reml(d)
    est = ci["estimate"].to_numpy()
    full = optimize.minimize(lambda x: crit(*x), est, method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    # the fit's estimates are the optimum of the independent criterion
    np.testing.assert_allclose(full.x, est, rtol=1e-4)
    for i, name in enumerate(ci.index):
        lo, hi = ci.loc[name, ["ci_low", "ci_high"]]
        assert lo < est[i] < hi, name
        for v in (lo, hi):
            # R: the profiled REML criterion at the endpoint minus its minimum = qchisq(0.95, 1)
            gap = _min_over(crit, i, v, full.x) - full.fun
            assert abs(gap - CUT) < 2e-4, (name, v, gap)


def test_marginal_profile_endpoint_matches_a_refit_holding_the_parameter():
    """A Toeplitz MMRM (mmrm's toep): refitting with the correlation parameter held at
    either endpoint (fixed=, the trust-region fit) raises -2 REML logLik by qchisq(0.95, 1)."""
    fev = pd.read_csv(__import__("pathlib").Path(__file__).parents[1] / "data" / "struct"
                      / "fev.csv")
    formula = "FEV1 ~ RACE + SEX + ARMCD * AVISIT"
    spec = ma.Toeplitz(group="USUBJID", time="AVISIT")
    res = ma.lmm(formula, fev, residual=spec)
    ci = res.conf_int(method="profile", criterion="REML", parm=["cor_param[lag1]"])
    lo, hi = ci.loc["cor_param[lag1]", ["ci_low", "ci_high"]]
    assert lo < ci.loc["cor_param[lag1]", "estimate"] < hi
    for v in (lo, hi):
        held = ma.lmm(formula, fev, residual=spec, fixed={"cor_param[lag1]": float(v)})
        # R: REMLcrit at the held value minus REMLcrit at the optimum = qchisq(0.95, 1)
        assert abs(held.reml_criterion - res.reml_criterion - CUT) < 1e-5


def test_bootstrap_is_seed_reproducible_and_covers_the_estimates(ovary_ar1):
    _, res = ovary_ar1
    a = res.conf_int(method="boot", n_boot=10, seed=11)
    b = res.conf_int(method="boot", n_boot=10, seed=11)
    # lme4::bootMer with set.seed(): the same seed gives the same intervals
    pd.testing.assert_frame_equal(a, b)
    assert "phi" in a.index and a.attrs["failed"] == 0
    inside = (a["ci_low"] <= a["estimate"]) & (a["estimate"] <= a["ci_high"])
    assert inside.all(), a[~inside]


def test_simulated_ar1_residuals_have_the_fitted_correlation(ovary_ar1):
    """nlme corAR1: lag-1 correlation phi, residual SD sigma (with the random intercept
    held at its BLUPs, the draws' deviations are the residual errors alone)."""
    d, res = ovary_ar1
    sims = res.simulate(n=400, seed=5, use_random=True).to_numpy()
    base = sims.mean(axis=1, keepdims=True)
    e = sims - base
    phi = float(res.residual_params["phi"])
    g = d["Mare"].to_numpy()
    t = d["time_index"].to_numpy()
    prev = np.flatnonzero((g[1:] == g[:-1]) & (t[1:] == t[:-1] + 1))
    r1 = np.corrcoef(e[prev].ravel(), e[prev + 1].ravel())[0, 1]
    # 400 draws x ~300 pairs: the sample correlation's SE is below 0.01
    assert abs(r1 - phi) < 0.03
    assert abs(e.std() / res.sigma - 1.0) < 0.02


def test_simulated_varident_residuals_have_the_fitted_sd_ratio():
    """nlme varIdent(form = ~ 1 | half): the SD ratio of the strata."""
    d = ma.load_dataset("sleepstudy")
    d["half"] = np.where(d["Days"] < 5, "early", "late")
    res = ma.lmm("Reaction ~ Days + (1|Subject)", d, residual=ma.VarIdent(by="half"))
    ratio = float(res.residual_params["late"])
    e = res.simulate(n=2000, seed=2, use_random=True).to_numpy()
    e = e - e.mean(axis=1, keepdims=True)
    late = (d["half"] == "late").to_numpy()
    assert abs(e[late].std() / e[~late].std() / ratio - 1.0) < 0.02


def test_simulated_compound_symmetry_residuals_have_the_fitted_correlation():
    """nlme corCompSymm(form = ~ 1 | plot): the correlation rho of two rows of a plot."""
    d = ma.load_dataset("oats_unbalanced")
    d["plot"] = d["Block"].astype(str) + ":" + d["Variety"].astype(str)
    res = ma.lmm("yield ~ Variety * nitro_f + (1|Block)", d, residual=ma.CompSymm(group="plot"))
    rho = float(res.residual_params["rho"])
    e = res.simulate(n=3000, seed=4, use_random=True).to_numpy()
    e = e - e.mean(axis=1, keepdims=True)
    plot = d["plot"].to_numpy()
    i, j = np.nonzero(np.triu(plot[:, None] == plot[None, :], 1))
    r = np.corrcoef(e[i].ravel(), e[j].ravel())[0, 1]
    assert abs(r - rho) < 0.03
    assert abs(e.std() / res.sigma - 1.0) < 0.02
