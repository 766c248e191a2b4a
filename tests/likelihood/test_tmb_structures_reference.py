"""glmmTMB's structured random-effect covariances that lme4 syntax already spans
(issue 21): ``us(Days | Subject)`` = ``(Days | Subject)``, ``diag(Days | Subject)`` =
``(Days || Subject)``, and ``cs(Days | Subject)``, which with two terms is the same
model as ``us`` (fitted both ways: as lme4's model and as a structured term,
tests/design/test_structured_re.py).  References: tests/reference/struct_tmb_sleepstudy_*.json
(glmmTMB 1.1.5, REML; ``tight_refit``); ``se_gls`` is the GLS standard error that
lme4 reports (glmmTMB's own REML ``se`` adds beta-theta cross terms).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mixedanova as ma

REF = Path(__file__).resolve().parent.parent / "reference"
CASES = [("struct_tmb_sleepstudy_us", "Reaction ~ Days + (Days | Subject)"),
         ("struct_tmb_sleepstudy_us", "Reaction ~ Days + us(Days | Subject)"),
         ("struct_tmb_sleepstudy_diag", "Reaction ~ Days + (Days || Subject)"),
         ("struct_tmb_sleepstudy_diag", "Reaction ~ Days + diag(Days | Subject)"),
         ("struct_tmb_sleepstudy_cs", "Reaction ~ Days + (Days | Subject)"),
         ("struct_tmb_sleepstudy_cs", "Reaction ~ Days + cs(Days | Subject)")]


@pytest.mark.parametrize("case, formula", CASES)
def test_sleepstudy_structures(case, formula):
    ref = json.loads((REF / f"{case}.json").read_text())
    tight = ref["tight_refit"]
    res = ma.lmm(formula, ma.load_dataset("sleepstudy"))
    # logLik(m) of the tight glmmTMB refit (REML)
    assert res.llf == pytest.approx(tight["loglik"], rel=1e-6)
    np.testing.assert_allclose(res.fe_params.to_numpy(), tight["fixed"]["estimate"], rtol=1e-6)
    # sqrt(diag((X'V^-1X)^-1)) at the estimates (se_gls, the default fit)
    np.testing.assert_allclose(res.bse_fe.to_numpy(), ref["fixed"]["se_gls"], rtol=1e-5)
    # VarCorr(m): variances of the tight refit (correlation rows: covariances)
    vc = res.varcomp
    for row in tight["varcorr"]:
        if row["group"] == "Residual":
            got = vc.loc[vc["group"] == "Residual", "vcov"].iloc[0]
        else:
            # lme4 names the second term of (Days || Subject) "Subject.1"
            group = vc["group"].str.replace(r"\.\d+$", "", regex=True)
            sel = (group == row["group"]) & (vc["var1"] == row["var1"])
            sel &= vc["var2"].isna() if row["var2"] is None else (vc["var2"] == row["var2"])
            got = vc.loc[sel, "vcov"].iloc[0]
        assert got == pytest.approx(row["vcov"], rel=1e-5)


def test_ar1_random_effect_over_a_time_factor():
    """glmmTMB(y ~ time + arm + ar1(0 + timef | subject), REML = TRUE): the same
    model as nlme::gls(corExp(nugget = TRUE)); parameters (log_sd, x, betad)."""
    import pandas as pd

    ref = json.loads((REF / "struct_tmb_ar1.json").read_text())
    tight = ref["tight_refit"]
    data = pd.read_csv(Path(__file__).resolve().parent.parent / "data" / "struct" /
                       "ar1_visits.csv")
    res = ma.lmm("y ~ time + arm + ar1(0 + timef | subject)", data)
    assert res.nobs == ref["nobs"]
    assert res.llf == pytest.approx(tight["loglik"], rel=1e-6)          # logLik(m)
    assert res.llf == pytest.approx(ref["nlme_gls_check"]["loglik"], rel=1e-6)
    np.testing.assert_allclose(res.fe_params.to_numpy(), tight["fixed"]["estimate"], rtol=1e-6)
    np.testing.assert_allclose(res.bse_fe.to_numpy(), ref["fixed"]["se_gls"], rtol=1e-5)
    # getME(m, "theta") and betad = log(sigma^2)
    np.testing.assert_allclose(res.residual_params.to_numpy()[:2], tight["theta"], atol=1e-5)
    assert res.residual_params["betad"] == pytest.approx(2 * np.log(tight["sigma"]), abs=1e-5)
