"""Marginal models with a visit covariance (issue 21) against mmrm 0.3.18 and nlme.

References: tests/reference/struct_fev_*.json, struct_bcva_us.json (see
tests/reference/STRUCT_README.md); data: tests/data/struct/*.csv.  mmrm's default
optimizer stops early, so the numbers are compared with each file's
``tight_refit`` (located by Newton steps on TMB's exact gradient and Hessian).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.inference.kenward_roger import kenward_roger_setup
from mixedanova.likelihood.marginal import kenward_roger_pieces

HERE = Path(__file__).resolve().parent.parent
DATA = HERE / "data" / "struct"
REF = HERE / "reference"
FORMULA = "FEV1 ~ RACE + SEX + ARMCD * AVISIT"

STRUCTURES = {
    "us": ma.Unstructured(group="USUBJID", time="AVISIT"),
    "toeph": ma.Toeplitz(group="USUBJID", time="AVISIT", heterogeneous=True),
    "ar1h": ma.AR1H(group="USUBJID", time="AVISIT"),
    "csh": ma.CSH(group="USUBJID", time="AVISIT"),
    "ad": ma.AnteDependence(group="USUBJID", time="AVISIT"),
    "cs": ma.CompSymm(group="USUBJID"),
    "ar1": ma.AR1(group="USUBJID", order="VISITN"),
}


def _ref(case: str) -> dict:
    with open(REF / f"{case}.json") as fh:
        return json.load(fh)


def _r_name(name: str) -> str:
    import re
    return "(Intercept)" if name == "Intercept" else re.sub(r"\[T\.([^\]]*)\]", r"\1", name)


_FITS: dict = {}


def _fev() -> pd.DataFrame:
    return pd.read_csv(DATA / "fev.csv")


def _fit(kind: str):
    if kind not in _FITS:
        _FITS[kind] = ma.lmm(FORMULA, _fev(), residual=STRUCTURES[kind])
    return _FITS[kind]


@pytest.mark.parametrize("kind", list(STRUCTURES))
def test_loglik_fixed_effects_and_covariance(kind):
    ref = _ref(f"struct_fev_{kind}")
    tight = ref["tight_refit"]
    res = _fit(kind)
    assert res.nobs == ref["nobs"] == 537
    # logLik(fit) at mmrm's tight optimum (REML)
    assert res.llf == pytest.approx(tight["loglik"], rel=1e-6, abs=0)
    assert abs(res.llf - tight["loglik"]) < 1e-6
    names = [_r_name(n) for n in res.fe_params.index]
    assert names == tight["fixed"]["names"]
    # component(fit, "beta_est"), sqrt(diag(fit$beta_vcov))
    np.testing.assert_allclose(res.fe_params.to_numpy(), tight["fixed"]["estimate"], rtol=1e-6)
    np.testing.assert_allclose(res.bse_fe.to_numpy(), tight["fixed"]["se"], rtol=1e-6)
    # component(fit, "theta_est") in mmrm's parametrization, and VarCorr(fit)
    assert tuple(res.residual_params.index) == tuple(ref["theta_names"])
    np.testing.assert_allclose(res.residual_params.to_numpy(), tight["theta"], atol=1e-6)
    sigma = res.state.residual.structure.matrices(res.state.residual.u)[0]
    np.testing.assert_allclose(sigma, tight["covariance"]["matrix"], rtol=1e-6)


@pytest.mark.parametrize("kind", list(STRUCTURES))
def test_kenward_roger_and_satterthwaite(kind):
    tight = _ref(f"struct_fev_{kind}")["tight_refit"]["fixed"]
    res = _fit(kind)
    kr = res.fixed(ddf="kenward-roger")
    # summary(fit_kr)$coefficients: adjusted SE (fit$beta_vcov_adj) and KR df
    np.testing.assert_allclose(kr["std_err"].to_numpy(), tight["se_kenward_roger"], rtol=1e-6)
    np.testing.assert_allclose(kr["df"].to_numpy(), tight["df_kenward_roger"], rtol=1e-5)
    st = res.fixed(ddf="satterthwaite")
    # summary(fit_s)$coefficients: unadjusted SE, Satterthwaite df
    np.testing.assert_allclose(st["std_err"].to_numpy(), tight["se"], rtol=1e-6)
    np.testing.assert_allclose(st["df"].to_numpy(), tight["df_satterthwaite"], rtol=1e-5)


def test_kenward_roger_pieces_at_mmrm_default_theta():
    """At mmrm's own (default-fit) theta: component(fit, "theta_vcov"),
    fit$beta_vcov_adj and the Kenward-Roger-Linear vcov, computed from the same theta."""
    ref = _ref("struct_fev_us")
    res = _fit("us")
    crit = res.model.deviance_function(reml=True)
    theta = np.asarray(ref["theta"])
    ev = crit.evaluate(theta, order=2)
    W = 2.0 * np.linalg.inv(ev.hessian)
    np.testing.assert_allclose(W, ref["theta_vcov"]["matrix"], rtol=1e-6, atol=1e-10)
    phi, _, phi_adj = kenward_roger_pieces(crit, theta, W)
    np.testing.assert_allclose(phi, ref["vcov_beta"]["matrix"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(phi_adj, ref["vcov_beta_kenward_roger"]["matrix"], rtol=1e-6,
                               atol=1e-10)
    _, _, phi_lin = kenward_roger_pieces(crit, theta, W, linear=True)
    np.testing.assert_allclose(phi_lin, ref["kenward_roger_linear"]["vcov_beta"],
                               rtol=1e-6, atol=1e-10)


def test_kenward_roger_linear_at_the_optimum():
    ref = _ref("struct_fev_us")["kenward_roger_linear"]
    kr = kenward_roger_setup(_fit("us"), linear=True)
    # fit_krl: vcov = "Kenward-Roger-Linear" (default fit; mmrm stops 6e-5 early)
    np.testing.assert_allclose(np.sqrt(np.diag(kr.phi_adj)), ref["se"], rtol=2e-4)


def test_joint_test_of_the_interaction():
    ref = _ref("struct_fev_us")["joint_test_interaction"]
    res = _fit("us")
    names = [_r_name(n) for n in res.fe_params.index]
    L = np.zeros((3, len(names)))
    for i, c in enumerate(ref["coefficients"]):
        L[i, names.index(c)] = 1.0
    for ddf, key in (("kenward-roger", "kenward_roger"), ("satterthwaite", "satterthwaite")):
        out = res._inference.f_test(L, ddf)
        # mmrm::df_md(fit, C) of the default fit (which stops early; hence 1e-4)
        assert out["num_df"] == ref[key]["num_df"]
        assert out["den_df"] == pytest.approx(ref[key]["den_df"], rel=1e-4)
        assert out["F"] == pytest.approx(ref[key]["F"], rel=1e-4)


def test_gls_cross_check():
    """nlme::gls(corSymm + varIdent) is the same model: logLik -1693.2249357."""
    ref = _ref("struct_fev_us")["nlme_gls_check"]
    assert _fit("us").llf == pytest.approx(ref["loglik"], rel=1e-6)


def test_emmeans_per_visit():
    ref = _ref("struct_fev_emmeans")["kenward_roger_tight"]
    em = _fit("us").emmeans("ARMCD", by="AVISIT", ddf="kenward-roger")
    rows = pd.DataFrame(ref["emmeans"]["rows"])
    got = pd.DataFrame(em)
    assert list(got["ARMCD"].astype(str)) == list(rows["ARMCD"])
    assert list(got["AVISIT"].astype(str)) == list(rows["AVISIT"])
    # summary(emmeans(fit_kr_tight, ~ ARMCD | AVISIT))
    np.testing.assert_allclose(got["emmean"], rows["emmean"], rtol=1e-6)
    np.testing.assert_allclose(got["SE"], rows["se"], rtol=1e-6)
    np.testing.assert_allclose(got["df"], rows["df"], rtol=1e-5)
    np.testing.assert_allclose(got["lower_CL"], rows["lower_cl"], rtol=1e-6)
    pairs = em.pairs(adjust="none")
    crow = pd.DataFrame(ref["contrasts"]["rows"])
    # contrast(em, "revpairwise"): ARM_B - ARM_A; pairs() gives ARM_A - ARM_B
    np.testing.assert_allclose(-pairs["estimate"].to_numpy(), crow["estimate"], rtol=1e-6)
    np.testing.assert_allclose(pairs["SE"].to_numpy(), crow["se"], rtol=1e-6)
    np.testing.assert_allclose(pairs["df"].to_numpy(), crow["df"], rtol=1e-5)


def test_emmeans_satterthwaite_default_fit():
    ref = _ref("struct_fev_emmeans")["satterthwaite"]
    em = _fit("us").emmeans("ARMCD", by="AVISIT", ddf="satterthwaite")
    rows = pd.DataFrame(ref["emmeans"]["rows"])
    got = pd.DataFrame(em)
    # emmeans of mmrm's default Satterthwaite fit (it stops early: 1e-4)
    np.testing.assert_allclose(got["emmean"], rows["emmean"], rtol=1e-4)
    np.testing.assert_allclose(got["SE"], rows["se"], rtol=1e-4)
    np.testing.assert_allclose(got["df"], rows["df"], rtol=1e-3)


def test_bcva_unstructured_10_visits():
    ref = _ref("struct_bcva_us")
    tight = ref["tight_refit"]
    data = pd.read_csv(DATA / "bcva.csv")
    formula = ref["formula"].split(" + us(")[0]
    res = ma.lmm(formula, data, residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
    assert res.nobs == ref["nobs"]
    assert abs(res.llf - tight["loglik"]) < 1e-6 * abs(tight["loglik"])
    np.testing.assert_allclose(res.residual_params.to_numpy(), tight["theta"], atol=1e-5)
    np.testing.assert_allclose(res.fe_params.to_numpy(), tight["fixed"]["estimate"], rtol=1e-6)
    kr = res.fixed(ddf="kenward-roger")
    np.testing.assert_allclose(kr["std_err"].to_numpy(), tight["fixed"]["se_kenward_roger"],
                               rtol=1e-6)
    np.testing.assert_allclose(kr["df"].to_numpy(), tight["fixed"]["df_kenward_roger"],
                               rtol=1e-5)


def test_visit_covariance_accessor():
    ref = _ref("struct_fev_us")["tight_refit"]["covariance"]
    cov = _fit("us").visit_covariance()
    assert list(cov.index) == ["V1", "V2", "V3", "V4"]
    # VarCorr(fit) at the tight optimum
    np.testing.assert_allclose(cov.to_numpy(), ref["matrix"], rtol=1e-6)


@pytest.mark.parametrize("kind", ["us", "toeph"])
def test_information_criteria_conventions(kind):
    """docs/user_guide/covariance_structures.md: res.aic counts the fixed effects too
    (lme4, nlme, glmmTMB); mmrm's AIC(fit) / BIC(fit) count only theta and use the number
    of subjects in BIC.  Compared at the tight optimum's logLik (mmrm's default fit
    stops early): AIC(fit) - 2 logLik(fit) and BIC(fit) - 2 logLik(fit) differences."""
    ref = _ref(f"struct_fev_{kind}")
    res = _fit(kind)
    p = res.design.p
    n_theta = res.npar - p
    assert n_theta == ref["df"]                  # R: attr(logLik(fit), "df")
    # R: AIC(fit) + 2 logLik(fit) = 2 df;  BIC(fit) + 2 logLik(fit) = log(n_subjects) df
    assert (res.aic - 2 * p) + 2 * res.llf == pytest.approx(ref["aic"] + 2 * ref["loglik"],
                                                             rel=1e-12)
    assert np.log(ref["n_subjects"]) * n_theta == pytest.approx(ref["bic"] + 2 * ref["loglik"],
                                                               rel=1e-10)
    # and the criteria themselves at the tight optimum: R logLik 1e-6 relative
    assert res.aic - 2 * p == pytest.approx(-2 * ref["tight_refit"]["loglik"] + 2 * n_theta,
                                            rel=1e-9)


def test_weighted_unstructured_kenward_roger():
    """mmrm(FEV1 ~ RACE + SEX + ARMCD * AVISIT + us(AVISIT | USUBJID), weights = WEIGHT,
    method = "Kenward-Roger") (tests/reference/struct_fev_us_weights.json): logLik(m)
    and coef(summary(m)) estimates, KR-adjusted SEs and df."""
    ref = json.loads((REF / "struct_fev_us_weights.json").read_text())
    d = pd.read_csv(DATA / "fev.csv")
    res = ma.lmm("FEV1 ~ RACE + SEX + ARMCD * AVISIT", d, weights="WEIGHT",
                 residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
    assert res.llf == pytest.approx(ref["loglik"], rel=1e-6)
    tab = res.fixed(ddf="kenward-roger")
    f = ref["fixed"]
    np.testing.assert_allclose(tab["estimate"].to_numpy(), f["estimate"], rtol=1e-4)
    np.testing.assert_allclose(tab["std_err"].to_numpy(), f["se"], rtol=1e-4)
    np.testing.assert_allclose(tab["df"].to_numpy(), f["df"], rtol=1e-3)


def test_group_specific_unstructured_kenward_roger():
    """mmrm(FEV1 ~ RACE + SEX + ARMCD * AVISIT + us(AVISIT | ARMCD / USUBJID),
    method = "Kenward-Roger") (tests/reference/struct_fev_us_by_arm.json): logLik(m)
    and coef(summary(m)) estimates, KR-adjusted SEs and df."""
    ref = json.loads((REF / "struct_fev_us_by_arm.json").read_text())
    d = pd.read_csv(DATA / "fev.csv")
    res = ma.lmm("FEV1 ~ RACE + SEX + ARMCD * AVISIT", d,
                 residual=ma.Unstructured(group="USUBJID", time="AVISIT", by="ARMCD"))
    assert res.llf == pytest.approx(ref["loglik"], rel=1e-6)
    tab = res.fixed(ddf="kenward-roger")
    f = ref["fixed"]
    np.testing.assert_allclose(tab["estimate"].to_numpy(), f["estimate"], rtol=1e-4)
    np.testing.assert_allclose(tab["std_err"].to_numpy(), f["se"], rtol=1e-4)
    np.testing.assert_allclose(tab["df"].to_numpy(), f["df"], rtol=1e-3)
