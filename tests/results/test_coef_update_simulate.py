"""coef() against tests/reference/chickweight_coef_reml.json; update(); simulate()."""
from __future__ import annotations

import numpy as np
import pytest

import mixedanova as ma
from _refdata import assert_close, fit_reference, load_reference, r_name


def test_coef_chickweight():
    ref, res = fit_reference("chickweight_coef_reml")
    table = res.coef()["Chick"]
    cols = [r_name(c) for c in table.columns]
    assert cols == ref["coef"]["column_order"]
    for key, rtol in (("coef", 1e-4), ("coef_tight_refit", 1e-5)):
        r = ref[key]  # coef(m)$Chick (default fit at 1e-4, tight refit at 1e-5: README)
        ours = table.rename(columns=r_name).loc[r["levels"]]
        for col in r["column_order"]:
            assert_close(ours[col], r["columns"][col], rtol, f"{key}[, {col!r}]")


def test_coef_is_fixed_plus_random():
    ref, res = fit_reference("sleepstudy_reml")
    c = res.coef()["Subject"]
    re = res.random_effects["Subject"]
    assert np.allclose(c["Intercept"], res.fe_params["Intercept"] + re["(Intercept)"])
    assert np.allclose(c["Days"], res.fe_params["Days"] + re["Days"])


def test_update_formula_data_method():
    ref, res = fit_reference("sleepstudy_reml")
    ml = res.update(method="ML")
    ref_ml = load_reference("sleepstudy_ml")
    # deviance(update(m, REML = FALSE))
    assert ml.deviance == pytest.approx(ref_ml["deviance"], abs=1e-6)
    assert res.update("~ . - Days").design.formula.formula == \
        "Reaction ~ (Days|Subject)"  # update(m, ~ . - Days)
    small = res.update(". ~ . - (Days | Subject) + (1 | Subject)")
    assert small.design.formula.formula == "Reaction ~ Days + (1 | Subject)"
    ref_ri = load_reference("r2_icc")["random_intercept"]
    assert small.fe_params.to_numpy() == pytest.approx(list(ref_ri["fixed"].values()), rel=1e-6)
    df = ma.load_dataset("sleepstudy")
    sub = res.update(data=df[df["Days"] < 8])
    assert sub.nobs == int((df["Days"] < 8).sum())
    assert sub.design.formula.formula == res.design.formula.formula


def test_update_keeps_weights():
    ref = load_reference("clinic_weights_reml")
    res = ma.lmm(ref["formula"], ma.load_dataset("clinic_means"), weights="n")
    again = res.update(". ~ . - age_c")
    assert again.design.has_weights
    assert np.allclose(again.design.weights, res.design.weights)
    assert res.update().reml_criterion == pytest.approx(ref["reml_criterion"], abs=1e-6)


def test_simulate_reproducible_and_shaped():
    ref, res = fit_reference("sleepstudy_reml")
    a = res.simulate(3, seed=42)
    b = res.simulate(3, seed=42)
    assert a.shape == (res.nobs, 3) and list(a.columns) == ["sim_1", "sim_2", "sim_3"]
    assert a.equals(b)
    assert not a.equals(res.simulate(3, seed=43))
    with pytest.raises(ma.MixedAnovaError, match="n must be a positive"):
        res.simulate(0)


def _marginal_moments(res):
    d = res.design
    mean = d.X @ res.fe_params.to_numpy() + d.offset_values
    var = res.sigma ** 2 / d.prior_weights
    for b, S in zip(d.blocks, res._term_covariances()):
        var = var + np.einsum("ij,jk,ik->i", b.zraw, S, b.zraw)
    return mean, var


@pytest.mark.parametrize("case,kwargs", [
    ("sleepstudy_reml", {}),
    ("clinic_weights_reml", {"weights": "n"}),
])
def test_simulate_moments(case, kwargs):
    ref = load_reference(case)
    res = ma.lmm(ref["formula"], ma.load_dataset(ref["dataset"][:-4]), **kwargs)
    n = 4000
    draws = res.simulate(n, seed=1).to_numpy()
    mean, var = _marginal_moments(res)
    # mean of y within 3 SE of X beta (+ offset): per row (99.7% expected) ...
    z = (draws.mean(axis=1) - mean) / np.sqrt(var / n)
    assert np.mean(np.abs(z) <= 3.0) > 0.98
    # ... and the grand mean, whose variance is 1'V1 / (rows^2 n)
    d = res.design
    one_v_one = float(np.sum(res.sigma ** 2 / d.prior_weights))
    for b, S in zip(d.blocks, res._term_covariances()):
        sums = np.zeros((b.nlev, b.q))
        np.add.at(sums, b.codes, b.zraw)
        one_v_one += float(np.einsum("lj,jk,lk->", sums, S, sums))
    se_grand = np.sqrt(one_v_one / n) / d.nobs
    assert abs(draws.mean() - mean.mean()) <= 3.0 * se_grand
    # variance within 3 SE (the SE of a normal sample variance is var sqrt(2 / (n - 1)))
    se_var = var * np.sqrt(2.0 / (n - 1))
    zv = (draws.var(axis=1, ddof=1) - var) / se_var
    assert np.mean(np.abs(zv) <= 3.0) > 0.98
    assert abs(zv.mean()) < 3.0


def test_simulate_conditional_on_blups():
    ref, res = fit_reference("sleepstudy_reml")
    draws = res.simulate(3000, seed=7, use_random=True).to_numpy()
    # use.u = TRUE: mean is the conditional fit, variance sigma^2
    se = res.sigma / np.sqrt(3000)
    z = (draws.mean(axis=1) - res.fittedvalues.to_numpy()) / se
    assert np.mean(np.abs(z) <= 3.0) > 0.98
    assert draws.var(axis=1, ddof=1).mean() == pytest.approx(res.sigma ** 2, rel=0.02)
