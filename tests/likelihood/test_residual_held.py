"""Residual-structure parameters held at given values with random terms (issue 21).

Reference: tests/reference/ovary_ar1_fixed.json (tests/reference/r/ovary_ar1_fixed.R):
``nlme::lme(follicles ~ sin2pit + cos2pit, random = ~ 1 | Mare,
correlation = corAR1(0.5, form = ~ 1 | Mare, fixed = TRUE), method = "REML" / "ML")``
on the bundled ovary data.  Other checks compare a held fit with the same model
fitted freely (held at the free estimate) or with the equivalent model without
the structure (AR(1) held at phi = 0 is independent residuals).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mixedanova as ma
from mixedanova.errors import ArgumentError

HERE = Path(__file__).resolve().parent.parent
FORMULA = "follicles ~ sin2pit + cos2pit + (1|Mare)"


def _ovary(**kwargs):
    return ma.lmm(FORMULA, ma.load_dataset("ovary"),
                  residual=ma.AR1(group="Mare", order="time_index"), **kwargs)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((HERE / "reference" / "ovary_ar1_fixed.json").read_text())


@pytest.mark.parametrize("method, key", [("REML", "held_reml"), ("ML", "held_ml")])
def test_phi_held_matches_nlme(reference, method, key):
    """nlme::lme(..., correlation = corAR1(0.5, form = ~ 1 | Mare, fixed = TRUE)):
    logLik, AIC (npar 5: phi not counted), fixef, their SEs, sigma, the Mare SD."""
    ref = reference[key]
    res = _ovary(method=method, fixed={"phi": 0.5})
    assert res.residual_params["phi"] == 0.5                              # phi held
    assert res.llf == pytest.approx(ref["loglik"], abs=1e-6)              # logLik(m)
    assert res.npar == ref["npar"]                                        # attr(logLik(m), "df")
    assert res.aic == pytest.approx(ref["aic"], abs=2e-6)                 # AIC(m)
    np.testing.assert_allclose(res.fe_params.to_numpy(), ref["fixed"]["estimate"],
                               rtol=1e-6)                                 # fixef(m)
    se = res.bse_fe.to_numpy()
    if method == "ML":  # nlme's ML SEs use sigma^2 N / (N - p) (lme4's use sigma^2)
        se = se * np.sqrt(res.nobs / (res.nobs - len(se)))
    np.testing.assert_allclose(se, ref["fixed"]["se"], rtol=1e-5)   # summary(m)$tTable
    assert res.sigma == pytest.approx(ref["sigma"], rel=1e-5)             # m$sigma
    sd = float(res.varcomp["sdcor"].iloc[0])
    assert sd == pytest.approx(ref["random_effect_sd"], rel=1e-5)         # getVarCov(m)


def test_phi_held_at_free_estimate_reproduces_free_fit(reference):
    """nlme::lme(..., correlation = corAR1(form = ~ 1 | Mare)) logLik and fixef: the fit
    with phi held at its own free estimate is the free fit (one parameter fewer)."""
    free = _ovary()
    assert free.llf == pytest.approx(reference["free_reml"]["loglik"], abs=1e-6)
    held = _ovary(fixed={"phi": float(free.residual_params["phi"])})
    assert held.llf == pytest.approx(free.llf, abs=1e-8)
    np.testing.assert_allclose(held.fe_params.to_numpy(), free.fe_params.to_numpy(),
                               rtol=1e-6, atol=1e-10)
    assert held.npar == free.npar - 1
    # held away from the optimum the criterion can only be worse (nlme: -777.14 < -775.22)
    assert _ovary(fixed={"phi": 0.5}).llf < free.llf


def test_one_of_two_parameters_held(trial_visits):
    """nlme::lme(y ~ visit * arm, random = ~ 1 | patient, correlation = corAR1(form =
    ~ visit | patient), weights = varIdent(form = ~ 1 | arm)): phi held at the free
    estimate, the variance ratio still estimated, reproduces the free fit."""
    residual = (ma.AR1(group="patient", order="visit"), ma.VarIdent(by="arm"))
    free = ma.lmm("y ~ visit * arm + (1|patient)", trial_visits, residual=residual)
    phi = float(free.residual_params["phi"])
    held = ma.lmm("y ~ visit * arm + (1|patient)", trial_visits, residual=residual,
                  fixed={"phi": phi})
    assert held.llf == pytest.approx(free.llf, abs=1e-8)
    np.testing.assert_allclose(held.fe_params.to_numpy(), free.fe_params.to_numpy(),
                               rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(held.residual_params.to_numpy(),
                               free.residual_params.to_numpy(), rtol=1e-5)
    assert held.npar == free.npar - 1


def test_phi_held_at_zero_is_the_independent_model():
    """lmerTest::lmer(follicles ~ sin2pit + cos2pit + (1|Mare)) (phi = 0: independent
    residuals): logLik, fixef and Satterthwaite df, phi treated as a constant."""
    plain = ma.lmm(FORMULA, ma.load_dataset("ovary"))
    held = _ovary(fixed={"phi": 0.0})
    assert held.llf == pytest.approx(plain.llf, abs=1e-8)
    np.testing.assert_allclose(held.fe_params.to_numpy(), plain.fe_params.to_numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(held.fixed("satterthwaite")["df"].to_numpy(),
                               plain.fixed("satterthwaite")["df"].to_numpy(), rtol=1e-4)
    assert held.npar == plain.npar


def test_unknown_or_invalid_held_parameter():
    """nlme::corAR1(value, fixed = TRUE) takes phi only, in (-1, 1)."""
    with pytest.raises(ArgumentError, match="'rho'.*'phi'"):
        _ovary(fixed={"rho": 0.5})
    with pytest.raises(ArgumentError, match="phi"):
        _ovary(fixed={"phi": 1.5})


def test_kenward_roger_refuses_held_structure_parameter():
    """pbkrtest has no lme method; our residual KR differentiates every structure
    parameter, so with phi held it refuses (naming phi) instead of a wrong df."""
    res = _ovary(fixed={"phi": 0.5})
    with pytest.raises(ArgumentError, match="'phi'"):
        res.fixed("kenward-roger")
