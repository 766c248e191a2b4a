"""The marginal (GLS) engine for visit covariances: derivatives, groups, data rules (issue 21).

These check the engine against itself (finite differences, equivalent
specifications); tests/likelihood/test_mmrm_reference.py checks it against mmrm.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma

DATA = Path(__file__).resolve().parent.parent / "data" / "struct"
FORMULA = "FEV1 ~ RACE + SEX + ARMCD * AVISIT"


@pytest.fixture(scope="module")
def fev():
    return pd.read_csv(DATA / "fev.csv")


def _fd_hessian(f, x, h=1e-4):
    k = len(x)
    H = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h, np.eye(k)[j] * h
            H[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * h * h)
    return H


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("structure", [
    ma.Toeplitz(group="USUBJID", time="AVISIT", heterogeneous=True),
    ma.Unstructured(group="USUBJID", time="AVISIT", by="ARMCD"),
    ma.AnteDependence(group="USUBJID", time="AVISIT", heterogeneous=True),
    ma.CSH(group="USUBJID", time="AVISIT")])
def test_gradient_and_hessian_equal_finite_differences(fev, method, structure):
    model = ma.LinearMixedModel.from_formula(FORMULA, fev, residual=structure)
    crit = model.deviance_function(reml=method == "REML")
    res = model.fit(method)
    theta = res.state.residual.u + 0.05  # away from the optimum: the gradient is not 0
    ev = crit.evaluate(theta, order=2)

    def f(t):
        return crit.evaluate(t).value

    g = np.array([(f(theta + 1e-5 * e) - f(theta - 1e-5 * e)) / 2e-5
                  for e in np.eye(len(theta))])
    np.testing.assert_allclose(ev.gradient, g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ev.hessian, _fd_hessian(f, theta), rtol=1e-4, atol=1e-3)


def test_covariance_per_group(fev):
    one = ma.lmm(FORMULA, fev, residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
    fev2 = fev.assign(ALL="all")
    same = ma.lmm(FORMULA, fev2, residual=ma.Unstructured(group="USUBJID", time="AVISIT",
                                                           by="ALL"))
    assert same.llf == pytest.approx(one.llf, rel=1e-10)
    two = ma.lmm(FORMULA, fev, residual=ma.Unstructured(group="USUBJID", time="AVISIT",
                                                         by="ARMCD"))
    assert len(two.residual_params) == 20
    assert two.residual_params.index[0] == "ARM_A:log_sd[V1]"
    assert two.residual_params.index[10] == "ARM_B:log_sd[V1]"
    assert two.llf > one.llf  # the per-arm model contains the common one
    assert two.npar == one.npar + 10
    kr = two.fixed(ddf="kenward-roger")
    assert np.all(np.isfinite(kr["df"]))
    np.testing.assert_allclose(kr["std_err"], two.bse_fe.to_numpy(), rtol=0.1)
    # one coefficient: mmrm's Kenward-Roger df are Satterthwaite's (h_df_1d_kr)
    np.testing.assert_allclose(kr["df"], two.fixed()["df"], rtol=1e-10)


def test_numeric_time_equals_the_factor(fev):
    a = ma.lmm(FORMULA, fev, residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
    b = ma.lmm(FORMULA, fev, residual=ma.Unstructured(group="USUBJID", time="VISITN"))
    assert b.llf == pytest.approx(a.llf, rel=1e-10)
    np.testing.assert_allclose(b.residual_params.to_numpy(), a.residual_params.to_numpy(),
                               atol=1e-6)


def test_constant_weights_rescale_the_covariance_only(fev):
    """mmrm's weights: Sigma_i = W^-1/2 Sigma W^-1/2, so w = 2 doubles Sigma."""
    a = ma.lmm(FORMULA, fev, residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
    b = ma.lmm(FORMULA, fev, weights=np.full(len(fev), 2.0),
               residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
    assert b.llf == pytest.approx(a.llf, rel=1e-9)
    np.testing.assert_allclose(b.fe_params.to_numpy(), a.fe_params.to_numpy(), rtol=1e-7)
    np.testing.assert_allclose(b.residual_params.to_numpy()[:4],
                               a.residual_params.to_numpy()[:4] + 0.5 * np.log(2.0), atol=1e-6)


def test_dropout_and_results(fev):
    res = ma.lmm(FORMULA, fev, residual=ma.AR1H(group="USUBJID", time="AVISIT"))
    assert res.converged
    rows = np.flatnonzero(res.design.data["USUBJID"].to_numpy() == "PT2")
    R = res.residual_covariance(rows).to_numpy()
    S = res.state.residual.structure.matrices(res.state.residual.u)[0]
    vis = pd.Categorical(res.design.data["AVISIT"].iloc[rows], categories=["V1", "V2", "V3",
                                                                           "V4"]).codes
    np.testing.assert_allclose(R, S[np.ix_(vis, vis)])
    assert res.predict(fev.dropna().head()).shape == (5,)
    sims = res.simulate(3, seed=1)
    assert sims.shape == (res.nobs, 3)
    cmp = ma.compare(res, ma.lmm(FORMULA, fev, residual=ma.CSH(group="USUBJID", time="AVISIT")))
    assert len(cmp) == 2


def test_marginal_errors(fev):
    with pytest.raises(ma.DesignError, match="more than one row at visit"):
        ma.lmm(FORMULA, pd.concat([fev, fev.iloc[:2]]),
               residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
    bad = fev.assign(ARM2=np.where(np.arange(len(fev)) % 2 == 0, "a", "b"))
    with pytest.raises(ma.DesignError, match="varies inside group"):
        ma.lmm(FORMULA, bad, residual=ma.Unstructured(group="USUBJID", time="AVISIT",
                                                      by="ARM2"))
    with pytest.raises(ma.DesignError, match="marginal model"):
        ma.lmm(FORMULA, fev, residual=ma.VarIdent(by="AVISIT"))
    with pytest.raises(ma.DesignError, match="its own visit SDs"):
        ma.lmm(FORMULA + " + (1|USUBJID)", fev,
               residual=(ma.Unstructured(group="USUBJID", time="AVISIT"), ma.VarIdent("AVISIT")))
    with pytest.raises(ma.DesignError, match="no random-effects term"):
        ma.lmm(FORMULA, fev)


@pytest.mark.parametrize("structure", [
    ma.Toeplitz(group="USUBJID", time="AVISIT"),
    ma.Unstructured(group="USUBJID", time="AVISIT")])
def test_with_a_random_intercept_the_same_likelihood(fev, structure):
    """A subject intercept adds tau^2 to every entry of a Toeplitz or unstructured
    visit covariance, which the structure already spans: the same maximum."""
    marginal = ma.lmm(FORMULA, fev, residual=structure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixed = ma.lmm(FORMULA + " + (1|USUBJID)", fev, residual=structure)
        np.testing.assert_allclose(mixed.fe_params.to_numpy(), marginal.fe_params.to_numpy(),
                                   rtol=1e-4)
    assert mixed.llf == pytest.approx(marginal.llf, rel=1e-8)
    s = mixed.state.residual.structure.correlation
    assert s.names == marginal.residual_params.index[1:].tolist() or \
        tuple(s.names) == tuple(marginal.residual_params.index[1:])


def test_parametric_bootstrap_of_a_marginal_model(fev):
    res = ma.lmm(FORMULA, fev, residual=ma.CSH(group="USUBJID", time="AVISIT"))
    boot = res.conf_int(method="boot", n_boot=40, seed=3, parm="fixed")
    wald = res.conf_int(parm="fixed")
    assert boot.attrs["failed"] == 0
    assert np.all(boot["ci_low"] < boot["estimate"]) and np.all(boot["estimate"] < boot["ci_high"])
    ratio = (boot["ci_high"] - boot["ci_low"]) / (wald["ci_high"] - wald["ci_low"])
    assert np.all((ratio > 0.5) & (ratio < 2.0))


def test_visit_covariance_with_a_random_term_inference(fev):
    """Subjects nested in RACE: (1|RACE) plus an unstructured visit covariance.
    Satterthwaite df come from the residual engine; Kenward-Roger from the dense
    per-block route (tests/inference/test_kenward_roger_residual.py checks its numbers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ma.lmm("FEV1 ~ SEX + ARMCD * AVISIT + (1|RACE)", fev,
                     residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
        tab = res.fixed()
    assert np.all(np.isfinite(tab["df"])) and np.all(tab["df"] > 0)
    cov = res.visit_covariance()
    assert cov.shape == (4, 4) and np.all(np.linalg.eigvalsh(cov.to_numpy()) > 0)
    kr = res.fixed(ddf="kenward-roger")   # SAS DDFM=KR: finite df and adjusted SEs
    assert np.all(np.isfinite(kr["df"])) and np.all(kr["df"] > 0)
    assert np.all(np.isfinite(kr["std_err"])) and np.all(kr["std_err"] > 0)


def test_fixed_structure_parameters(fev):
    spec = ma.Toeplitz(group="USUBJID", time="AVISIT", heterogeneous=True)
    free = ma.lmm(FORMULA, fev, residual=spec)
    est = dict(zip(free.residual_params.index, free.residual_params.to_numpy()))
    one = ma.lmm(FORMULA, fev, residual=spec, fixed={"cor_param[lag3]": est["cor_param[lag3]"]})
    assert one.llf == pytest.approx(free.llf, rel=1e-10)
    assert one.npar == free.npar - 1
    np.testing.assert_allclose(one.fe_params.to_numpy(), free.fe_params.to_numpy(), rtol=1e-7)
    zero = ma.lmm(FORMULA, fev, residual=spec, fixed={"cor_param[lag3]": 0.0})
    assert zero.residual_params["cor_param[lag3]"] == 0.0 and zero.llf < free.llf
    # every parameter known: the GLS SEs, no small-sample adjustment, infinite df
    known = ma.lmm(FORMULA, fev, residual=spec, fixed=est)
    kr = known.fixed(ddf="kenward-roger")
    np.testing.assert_allclose(kr["std_err"], free.bse_fe.to_numpy(), rtol=1e-8)
    assert np.all(np.isinf(kr["df"])) and np.all(np.isinf(known.fixed()["df"]))
    with pytest.raises(ma.ArgumentError, match="unknown parameter 'nope'"):
        ma.lmm(FORMULA, fev, residual=spec, fixed={"nope": 1.0})
