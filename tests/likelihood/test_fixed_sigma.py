"""Fits with sigma held fixed: a random-effects meta-analysis as an LMM (issue 21).

References: tests/reference/struct_meta_bcg.json and struct_meta_bcg_ablat.json
(metafor 3.8.1 ``rma(yi, vi, method = "REML")``; data tests/data/struct/bcg.csv).
metafor's REML log-likelihood adds ``log|X'X| / 2``; ``loglik_lmm_convention``
is the LMM one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma

HERE = Path(__file__).resolve().parent.parent
CASES = {"struct_meta_bcg": "yi ~ 1 + (1|trial)",
         "struct_meta_bcg_ablat": "yi ~ 1 + ablat + (1|trial)"}


def _fit(case):
    ref = json.loads((HERE / "reference" / f"{case}.json").read_text())
    dat = pd.read_csv(HERE / "data" / "struct" / "bcg.csv")
    return ref, ma.lmm(CASES[case], dat, weights=1 / dat.vi, fixed={"sigma": 1.0})


@pytest.mark.parametrize("case", list(CASES))
def test_metafor_rma_reml(case):
    ref, res = _fit(case)
    tight = ref["tight_refit"]
    assert res.sigma == 1.0
    tau2 = float(res.varcomp["vcov"].iloc[0])
    assert tau2 == pytest.approx(tight["tau2"], rel=1e-6)               # r$tau2 (tight)
    assert res.llf == pytest.approx(tight["loglik_lmm_convention"], rel=1e-6)
    assert res.llf + ref["half_logdet_XtX"] == pytest.approx(tight["loglik"], rel=1e-6)
    np.testing.assert_allclose(res.fe_params.to_numpy(), tight["fixed"]["estimate"], rtol=1e-6)
    np.testing.assert_allclose(res.bse_fe.to_numpy(), tight["fixed"]["se"], rtol=1e-6)
    # metafor counts tau^2 and the fixed effects: AIC of the default fit (stops early)
    assert res.npar == ref["p"] + 1
    assert res.aic - 2 * ref["half_logdet_XtX"] == pytest.approx(ref["aic"], abs=1e-4)


def test_fixed_sigma_satterthwaite_has_no_sigma_parameter():
    _, res = _fit("struct_meta_bcg")
    setup = res._inference.satterthwaite
    assert setup.varpar.shape == (1,)
    assert setup.hessian.shape == (1, 1)


def test_fixed_argument_errors():
    dat = pd.read_csv(HERE / "data" / "struct" / "bcg.csv")
    with pytest.raises(ma.ArgumentError, match=r"unknown parameter 'tau'.*'sigma', 'trial: \(Intercept\)'"):
        ma.lmm("yi ~ 1 + (1|trial)", dat, weights=1 / dat.vi, fixed={"tau": 1.0})
    with pytest.raises(ma.ArgumentError, match="positive number"):
        ma.lmm("yi ~ 1 + (1|trial)", dat, weights=1 / dat.vi, fixed={"sigma": -1.0})
    with pytest.raises(ma.DesignError, match="13 levels for 13 observations"):
        ma.lmm("yi ~ 1 + (1|trial)", dat, weights=1 / dat.vi)


def test_three_level_meta_analysis_equals_the_dense_reml():
    """``(1|district/school)`` with known sampling variances: the REML fit equals a
    direct maximization of the dense REML likelihood of V = diag(v) + t1 D + t2 I."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(7)
    d = pd.DataFrame({"district": np.repeat(np.arange(11), 5).astype(str),
                      "school": np.tile(np.arange(5), 11).astype(str)})
    vi = rng.uniform(0.01, 0.1, len(d))
    y = (0.2 + rng.normal(0, 0.25, 11)[np.repeat(np.arange(11), 5)]
         + rng.normal(0, 0.3, len(d)) + rng.normal(0, np.sqrt(vi)))
    d = d.assign(vi=vi, yi=y)
    X = np.ones((len(d), 1))
    dist = d["district"].to_numpy(dtype=object)
    D = (dist[:, None] == dist[None, :]).astype(float)

    def crit(p):
        V = np.diag(vi) + np.exp(p[0]) * D + np.exp(p[1]) * np.eye(len(d))
        Vi = np.linalg.inv(V)
        XVX = X.T @ Vi @ X
        r = y - X @ np.linalg.solve(XVX, X.T @ Vi @ y)
        return (np.linalg.slogdet(V)[1] + np.linalg.slogdet(XVX)[1] + r @ Vi @ r
                + (len(y) - 1) * np.log(2 * np.pi))

    opt = minimize(crit, [np.log(0.05), np.log(0.05)], method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 5000})
    res = ma.lmm("yi ~ 1 + (1|district/school)", d, weights=1 / d.vi, fixed={"sigma": 1.0})
    assert res.llf == pytest.approx(-opt.fun / 2, rel=1e-9)
    vc = res.varcomp.set_index("group")["vcov"]
    np.testing.assert_allclose([vc["district"], vc["school:district"]], np.exp(opt.x),
                               rtol=1e-4)


def test_profile_intervals_refused_with_sigma_fixed():
    _, res = _fit("struct_meta_bcg")
    with pytest.raises(ma.FitError, match="holds fixed"):
        res.conf_int(method="profile")
    boot = res.conf_int(method="boot", n_boot=20, seed=1)
    assert boot.loc["sigma", "ci_low"] == boot.loc["sigma", "ci_high"] == 1.0


@pytest.mark.parametrize("case,formula", [("intercept", "yi ~ 1 + (1|district/school)"),
                                          ("year", "yi ~ year + (1|district/school)")])
def test_metafor_three_level(case, formula):
    """metafor: rma.mv(yi, vi, mods, random = ~ 1 | district/school, method = "REML")
    on dat.konstantopoulos2011 (tests/reference/struct_meta_three_level.json)."""
    ref = json.loads((HERE / "reference" / "struct_meta_three_level.json").read_text())
    f = ref["fits"][case]
    dat = pd.read_csv(HERE / "data" / "struct" / "konstantopoulos2011.csv")
    res = ma.lmm(formula, dat, weights=1 / dat.vi, fixed={"sigma": 1.0})
    vc = res.varcomp.set_index("group")["vcov"]
    # m$sigma2: district, then school within district
    assert vc["district"] == pytest.approx(f["sigma2"][0], rel=1e-5)
    assert vc["school:district"] == pytest.approx(f["sigma2"][1], rel=1e-5)
    # coef(m), m$se (the GLS SEs)
    np.testing.assert_allclose(res.fe_params.to_numpy(), f["estimate"], rtol=1e-5)
    np.testing.assert_allclose(res.bse_fe.to_numpy(), f["se"], rtol=1e-5)
    # logLik(m): metafor's REML log-likelihood adds log|X'X| / 2
    assert res.llf + f["half_logdet_XtX"] == pytest.approx(f["loglik"], rel=1e-6)
