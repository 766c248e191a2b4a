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
    with pytest.raises(ma.ArgumentError, match="'sigma' only"):
        ma.lmm("yi ~ 1 + (1|trial)", dat, weights=1 / dat.vi, fixed={"tau": 1.0})
    with pytest.raises(ma.ArgumentError, match="positive number"):
        ma.lmm("yi ~ 1 + (1|trial)", dat, weights=1 / dat.vi, fixed={"sigma": -1.0})
    with pytest.raises(ma.DesignError, match="13 levels for 13 observations"):
        ma.lmm("yi ~ 1 + (1|trial)", dat, weights=1 / dat.vi)
