"""Structured random-effect covariances and held parameters (likelihood.structured_fit)
against glmmTMB 1.1.5: tests/reference/struct_re.json, made by
tests/reference/r/struct_re.R on tests/data/struct/struct_re.csv (simulated: 40
subjects x 4 visits x 2 replicates, a crossed rater) and sleepstudy.

Each case is ``glmmTMB(formula, REML = ...)`` (with ``map =`` and ``start =`` for
the held parameters) followed by Newton steps on glmmTMB's own objective; the
tolerances are the issue's: logLik 1e-6 relative, parameters 1e-4.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma

HERE = Path(__file__).resolve().parent.parent
REF = json.loads((HERE / "reference" / "struct_re.json").read_text())["fits"]


@pytest.fixture(scope="module")
def visits() -> pd.DataFrame:
    return pd.read_csv(HERE / "data" / "struct" / "struct_re.csv")


def _fit(case: str, visits: pd.DataFrame, sleepstudy: pd.DataFrame):
    f = REF[case]
    data = sleepstudy if f["formula"].startswith("Reaction") else visits
    return f, ma.lmm(f["formula"], data, method=f["method"], fixed=f.get("held"))


def _r_name(name):
    """formulaic's ``visit[V1]`` is R's ``visitV1``."""
    return None if name is None or pd.isna(name) else re.sub(r"\[(?:T\.)?(.*)\]$", r"\1", str(name))


@pytest.mark.parametrize("case", sorted(REF))
def test_against_glmmtmb(case, visits, sleepstudy):
    f, res = _fit(case, visits, sleepstudy)
    assert res.converged and res.nobs == f["nobs"]
    # logLik(m) (REML or ML)
    assert res.llf == pytest.approx(f["loglik"], rel=1e-6)
    # attr(logLik(m), "df"): fixed effects, free theta and betad (held ones not counted)
    assert res.npar == f["df"]
    # fixef(m)$cond; sqrt(diag((X'V^-1X)^-1)) at the estimates
    np.testing.assert_allclose(res.fe_params.to_numpy(), f["fixed"]["estimate"], rtol=1e-4)
    np.testing.assert_allclose(res.bse_fe.to_numpy(), f["fixed"]["se_gls"], rtol=1e-4)
    # VarCorr(m)$cond and sigma(m): variances, covariances (sdcor: SDs, correlations)
    vc = res.varcomp
    vc = vc.assign(group=vc["group"].str.replace(r"\.\d+$", "", regex=True))
    got = {(g, _r_name(a), _r_name(b)): (v, s) for g, a, b, v, s in
           vc[["group", "var1", "var2", "vcov", "sdcor"]].itertuples(index=False)}
    if case == "sleep_diag_ml":  # (Days || Subject): no correlation row in lme4's layout
        got[("Subject", "(Intercept)", "Days")] = (0.0, 0.0)
    for row in f["varcorr"]:
        v, s = got[(row["group"], row["var1"], row["var2"])]
        assert v == pytest.approx(row["vcov"], rel=1e-4, abs=1e-8)
        assert s == pytest.approx(row["sdcor"], rel=1e-4, abs=1e-8)


def test_held_values_stay_where_they_were_put(visits, sleepstudy):
    # glmmTMB map = : the held parameter is exactly its start value
    _, res = _fit("sleep_held_var_reml", visits, sleepstudy)
    vc = res.varcomp
    assert vc["vcov"].iloc[0] == pytest.approx(625.0, rel=1e-12)
    _, res = _fit("ar1_held_corr_reml", visits, sleepstudy)
    corr = res.varcomp.query("group == 'subject' and var2.notna()", engine="python")
    assert corr["sdcor"].iloc[0] == pytest.approx(0.5, rel=1e-12)
    assert "Held fixed: subject: corr = 0.5" in str(res.summary())
    _, res = _fit("toep_held_sigma_lag1_reml", visits, sleepstudy)
    assert res.sigma == 1.2
    corr = res.varcomp.query("group == 'subject' and var2.notna()", engine="python")
    assert corr["sdcor"].iloc[0] == pytest.approx(0.5, rel=1e-12)  # V1-V2: lag 1


def test_structured_cs_has_lmertest_satterthwaite_df(sleepstudy):
    """cs(Days | Subject) is lme4's (Days | Subject) with other parameters: the
    Satterthwaite df do not depend on the parametrization at the optimum."""
    ref = json.loads((HERE / "reference" / "sleepstudy_reml.json").read_text())
    res = ma.lmm("Reaction ~ Days + cs(Days | Subject)", sleepstudy)
    # lmerTest: summary(m)$coefficients[, "df"]
    np.testing.assert_allclose(res.fixed()["df"].to_numpy(),
                               ref["fixed"]["df_satterthwaite"], rtol=1e-3)
    # Kenward-Roger (in the fit's own parameters) is checked in
    # tests/inference/test_kenward_roger_structured.py


def test_satterthwaite_with_a_held_correlation_equals_the_dense_formula(sleepstudy):
    """Held corr = 0.2: Satterthwaite's df from a dense REML deviance of
    V = Z G Z' + s^2 I in (sd_0, sd_1, s) and vcov(beta) = (X'V^-1X)^-1, both
    differentiated numerically here (lmerTest's definition, Kuznetsova et al. 2017)."""
    res = ma.lmm("Reaction ~ Days + (Days | Subject)", sleepstudy,
                 fixed={"Subject: corr((Intercept), Days)": 0.2})
    assert res.npar == 5  # p + two SDs + sigma: the correlation is not counted
    d = sleepstudy
    X = np.column_stack([np.ones(len(d)), d["Days"]])
    y = d["Reaction"].to_numpy()
    codes = pd.factorize(d["Subject"])[0]
    Z = np.zeros((len(d), 2 * codes.max() + 2))
    Z[np.arange(len(d)), 2 * codes] = 1.0
    Z[np.arange(len(d)), 2 * codes + 1] = d["Days"]

    def pieces(v):
        s0, s1, s = v
        G = np.array([[s0 * s0, 0.2 * s0 * s1], [0.2 * s0 * s1, s1 * s1]])
        V = Z @ np.kron(np.eye(codes.max() + 1), G) @ Z.T + s * s * np.eye(len(d))
        Vi = np.linalg.inv(V)
        Phi = np.linalg.inv(X.T @ Vi @ X)
        r = y - X @ (Phi @ X.T @ Vi @ y)
        dev = (np.linalg.slogdet(V)[1] + np.linalg.slogdet(X.T @ Vi @ X)[1] + r @ Vi @ r
               + (len(d) - 2) * np.log(2 * np.pi))
        return dev, Phi

    vc = res.varcomp
    v0 = np.array([vc["sdcor"].iloc[0], vc["sdcor"].iloc[1], res.sigma])
    assert pieces(v0)[0] == pytest.approx(-2 * res.llf, rel=1e-10)
    h = 1e-3 * v0
    H = np.empty((3, 3))
    J = np.empty((3, 2, 2))
    for i in range(3):
        e = np.zeros(3)
        e[i] = h[i]
        J[i] = (pieces(v0 + e)[1] - pieces(v0 - e)[1]) / (2 * h[i])
        for j in range(3):
            f = np.zeros(3)
            f[j] = h[j]
            H[i, j] = (pieces(v0 + e + f)[0] - pieces(v0 + e - f)[0] - pieces(v0 - e + f)[0]
                       + pieces(v0 - e - f)[0]) / (4 * h[i] * h[j])
    A = 2 * np.linalg.inv(H)
    Phi = pieces(v0)[1]
    df = [2 * Phi[k, k] ** 2 / (J[:, k, k] @ A @ J[:, k, k]) for k in range(2)]
    np.testing.assert_allclose(res.fixed()["df"].to_numpy(), df, rtol=1e-3)


def test_unknown_names_list_the_valid_ones(visits):
    with pytest.raises(ma.ArgumentError, match=r"unknown parameter 'subject: rho'.*"
                                               r"'subject: variance', 'subject: corr'"):
        ma.lmm("y ~ time + ar1(0 + visit | subject) + (1 | rater)", visits,
               fixed={"subject: rho": 0.5})


def test_everything_held_is_the_dense_reml_likelihood_there(sleepstudy):
    """Variance 600 and sigma 25 held: nothing is estimated but beta; logLik is the
    REML log-likelihood of V = 600 J_subject + 625 I (lme4 / nlme convention)."""
    res = ma.lmm("Reaction ~ Days + (1 | Subject)", sleepstudy,
                 fixed={"Subject: (Intercept)": 600.0, "sigma": 25.0})
    d = sleepstudy
    X = np.column_stack([np.ones(len(d)), d["Days"]])
    y = d["Reaction"].to_numpy()
    same = (d["Subject"].to_numpy()[:, None] == d["Subject"].to_numpy()[None, :])
    V = 600.0 * same + 625.0 * np.eye(len(d))
    Vi = np.linalg.inv(V)
    A = X.T @ Vi @ X
    beta = np.linalg.solve(A, X.T @ Vi @ y)
    r = y - X @ beta
    ll = -0.5 * ((len(d) - 2) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1]
                 + np.linalg.slogdet(A)[1] + r @ Vi @ r)
    assert res.llf == pytest.approx(ll, rel=1e-10)
    np.testing.assert_allclose(res.fe_params.to_numpy(), beta, rtol=1e-10)
    assert res.npar == 2 and res.converged


def test_a_sole_ar1_term_as_a_random_term_reproduces_glmmtmb():
    """ar1(0 + timef | subject), one row per (subject, time) cell, as a random term
    (fixed= sends it there rather than to the marginal model) with its correlation
    held at glmmTMB's estimate: logLik(m) and VarCorr(m) of struct_tmb_ar1.json."""
    ref = json.loads((HERE / "reference" / "struct_tmb_ar1.json").read_text())["tight_refit"]
    data = pd.read_csv(HERE / "data" / "struct" / "ar1_visits.csv")
    x = ref["theta"][1]
    phi = x / np.sqrt(1 + x * x)  # glmmTMB's ar1 map
    res = ma.lmm("y ~ time + arm + ar1(0 + timef | subject)", data,
                 fixed={"subject: corr": phi})
    assert res.llf == pytest.approx(ref["loglik"], rel=1e-6)
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    assert res.varcomp["vcov"].iloc[0] == pytest.approx(ref["varcorr"][0]["vcov"], rel=1e-4)
    # as many random effects (60 x 6) as rows (333): ar1 has 2 parameters, no refusal
    data["site"] = (data["subject"] % 7).astype(str)
    assert ma.lmm("y ~ time + arm + ar1(0 + timef | subject) + (1 | site)", data).converged


def test_a_correlation_driven_to_one_is_a_singular_fit(sleepstudy):
    """cs(0 + blk | Subject) next to (Days | Subject) with blk pure noise: the cs
    correlation goes to 1 (the term is a second subject intercept), which lme4's
    isSingular would report for the same covariance; here a SingularFitWarning."""
    d = sleepstudy.assign(blk=np.random.default_rng(0).choice(list("abc"), len(sleepstudy)))
    with pytest.warns(ma.SingularFitWarning, match="correlation"):
        res = ma.lmm("Reaction ~ Days + cs(0 + blk | Subject) + (Days | Subject)", d)
    corr = res.varcomp.query("group == 'Subject' and var2.notna()", engine="python")
    assert res.is_singular and corr["sdcor"].min() > 0.9999
