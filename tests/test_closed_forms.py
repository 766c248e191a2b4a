"""Closed forms from textbooks: balanced one-way, nested and RCBD designs.

For balanced data REML variance components equal the ANOVA (mean-square)
estimators when those are positive (Searle, Casella & McCulloch, Variance
Components, sections 3.7 and 4.x); the one-way BLUP is the shrunken group mean
(ybar_i - ybar) * s2_a / (s2_a + s2_e / n).  The expected values here are
computed independently with plain numpy group means.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma


def _oneway_ms(y: np.ndarray, g: np.ndarray):
    groups = pd.Series(y).groupby(g)
    J, n = groups.ngroups, int(groups.size().iloc[0])
    means = groups.mean().to_numpy()
    msa = n * np.sum((means - y.mean()) ** 2) / (J - 1)
    mse = groups.apply(lambda s: np.sum((s - s.mean()) ** 2)).sum() / (J * (n - 1))
    return msa, mse, n, means


def test_balanced_oneway_reml_equals_anova_estimators():
    df = ma.load_dataset("dyestuff")
    y, g = df["Yield"].to_numpy(float), df["Batch"].to_numpy()
    msa, mse, n, means = _oneway_ms(y, g)
    s2a, s2e = (msa - mse) / n, mse
    assert s2a > 0
    res = ma.lmm("Yield ~ 1 + (1|Batch)", df)
    vc = res.varcomp.set_index("group")["vcov"]
    # issue 7: the optimum to 1e-9 relative, not to the optimizer's stopping rule
    assert vc["Batch"] == pytest.approx(s2a, rel=1e-9)
    assert vc["Residual"] == pytest.approx(s2e, rel=1e-9)
    # balanced: GLS mean = grand mean with SE sqrt(MSA / (J n))
    assert res.fe_params["Intercept"] == pytest.approx(y.mean(), rel=1e-12)
    assert res.bse_fe["Intercept"] == pytest.approx(np.sqrt(msa / len(y)), rel=1e-9)
    # BLUP = shrunken deviation of the group mean
    blup = (means - y.mean()) * s2a / (s2a + s2e / n)
    assert np.allclose(res.random_effects["Batch"]["(Intercept)"].to_numpy(), blup,
                       rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name, formula", [("dyestuff", "Yield ~ 1 + (1|Batch)"),
                                           ("rail", "travel ~ 1 + (1|Rail)")])
def test_balanced_oneway_ml_closed_form(name, formula):
    # ML (Searle, Casella & McCulloch 3.7): s2_e = MSE, s2_a = ((1 - 1/J) MSA - MSE) / n;
    # R: sigma(lmer(Yield ~ 1 + (1 | Batch), Dyestuff, REML = FALSE)) = sqrt(MSE)
    df = ma.load_dataset(name)
    yname, gname = formula.split(" ~ ")[0], formula.split("|")[1].strip(" )")
    y, g = df[yname].to_numpy(float), df[gname].to_numpy()
    msa, mse, n, _ = _oneway_ms(y, g)
    J = len(np.unique(g))
    s2a = ((1 - 1 / J) * msa - mse) / n
    assert s2a > 0
    res = ma.lmm(formula, df, method="ML")
    vc = res.varcomp.set_index("group")["vcov"]
    assert res.sigma == pytest.approx(np.sqrt(mse), rel=1e-9)
    assert vc["Residual"] == pytest.approx(mse, rel=1e-9)
    assert vc[gname] == pytest.approx(s2a, rel=1e-9)


def test_balanced_oneway_anova_method_gives_the_same_closed_forms():
    df = ma.load_dataset("dyestuff")
    y, g = df["Yield"].to_numpy(float), df["Batch"].to_numpy()
    msa, mse, n, means = _oneway_ms(y, g)
    res = ma.lmm("Yield ~ 1 + (1|Batch)", df, method="ANOVA")
    est = res.moment_estimates["estimate"]
    assert est["Batch"] == pytest.approx((msa - mse) / n, rel=1e-12)
    assert est["Residual"] == pytest.approx(mse, rel=1e-12)
    blup = (means - y.mean()) * est["Batch"] / (est["Batch"] + est["Residual"] / n)
    assert np.allclose(res.random_effects["Batch"]["(Intercept)"].to_numpy(), blup, rtol=1e-10)
    # ma.oneway agrees with method="ANOVA" on one-way data
    ow = ma.oneway(y, g)
    assert ow.s2_a == pytest.approx(est["Batch"], rel=1e-12)
    assert ow.s2_e == pytest.approx(est["Residual"], rel=1e-12)


def test_negative_anova_estimate_and_reml_boundary():
    # Dyestuff2: MSA < MSE, the moment estimate is negative and REML sits at 0
    df = ma.load_dataset("dyestuff2")
    y, g = df["Yield"].to_numpy(float), df["Batch"].to_numpy()
    msa, mse, n, _ = _oneway_ms(y, g)
    assert msa < mse
    with pytest.warns(ma.SingularFitWarning, match="variance of Batch"):
        res = ma.lmm("Yield ~ 1 + (1|Batch)", df)
    assert res.is_singular and res.theta[0] == 0.0
    # at s2_a = 0 REML is ordinary least squares: s2_e = total SS / (N - 1)
    assert res.sigma**2 == pytest.approx(np.var(y, ddof=1), rel=1e-10)
    mom = ma.lmm("Yield ~ 1 + (1|Batch)", df, method="ANOVA")
    assert mom.moment_estimates.loc["Batch", "estimate"] == pytest.approx((msa - mse) / n,
                                                                          rel=1e-12)
    assert bool(mom.moment_estimates.loc["Batch", "negative"])
    assert "negative moment estimate(s) set to 0: Batch" in str(mom.summary())


def test_nested_reml_equals_moment_estimates():
    # Pastes: batch / cask; s2_e = MSE, s2_cask = (MS_cask - MSE)/2, s2_batch = (MS_b - MS_c)/6
    df = ma.load_dataset("pastes")
    y = df["strength"].to_numpy(float)
    cask = df["batch"].astype(str) + ":" + df["cask"].astype(str)
    cm = pd.Series(y).groupby(cask.to_numpy()).mean()
    bm = pd.Series(y).groupby(df["batch"].to_numpy()).mean()
    mse = np.sum((y - cm[cask].to_numpy()) ** 2) / (60 - 30)
    msc = 2 * np.sum((cm.to_numpy() - bm[[k.split(":")[0] for k in cm.index]].to_numpy()) ** 2) / 20
    msb = 6 * np.sum((bm.to_numpy() - y.mean()) ** 2) / 9
    res = ma.lmm("strength ~ 1 + (1|batch/cask)", df)
    vc = res.varcomp.set_index("group")["vcov"]
    assert vc["Residual"] == pytest.approx(mse, rel=1e-9)
    assert vc["cask:batch"] == pytest.approx((msc - mse) / 2, rel=1e-9)
    assert vc["batch"] == pytest.approx((msb - msc) / 6, rel=1e-9)


def test_rcbd_reml_equals_moment_estimates():
    # BHH penicillin: 5 random blends x 4 fixed processes, one run per cell
    df = ma.load_dataset("bhh_penicillin")
    y = df["yield"].to_numpy(float)
    blend = pd.Series(y).groupby(df["blend"].to_numpy()).mean()
    treat = pd.Series(y).groupby(df["treat"].to_numpy()).mean()
    resid = y - blend[df["blend"]].to_numpy() - treat[df["treat"]].to_numpy() + y.mean()
    mse = np.sum(resid**2) / 12
    msb = 4 * np.sum((blend.to_numpy() - y.mean()) ** 2) / 4
    res = ma.lmm("yield ~ treat + (1|blend)", df)
    vc = res.varcomp.set_index("group")["vcov"]
    assert mse == pytest.approx(226 / 12, rel=1e-12)  # SS residual 226 (BHH table)
    assert vc["Residual"] == pytest.approx(mse, rel=1e-9)
    assert vc["blend"] == pytest.approx((msb - mse) / 4, rel=1e-9)
    # fixed effects in an RCBD are the differences of treatment means
    assert res.fe_params["treat[T.C]"] == pytest.approx(treat["C"] - treat["A"], rel=1e-10)
