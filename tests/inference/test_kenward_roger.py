"""Kenward-Roger df, adjusted SEs and p values against pbkrtest 0.5.2 via lmerTest 3.1-3.

``fixed.df_kenward_roger``, ``se_kenward_roger`` and ``p_kenward_roger`` are
``coef(summary(m, ddf = "Kenward-Roger"))`` (df from ``pbkrtest::Lb_ddf``, SE from
``pbkrtest::vcovAdj``).  Tolerances (issue 4): df and SE 1e-3 relative; p 1e-3
relative or 1e-10 absolute.  KR df are analytic in pbkrtest; the remaining
differences come from lme4's default fit stopping up to 6e-5 from the optimum.
"""
from __future__ import annotations


import numpy as np
import pytest

import mixedanova as ma
from _refdata import LMER_CASES, assert_close, load_reference, fit_reference

REML_CASES = [c for c in LMER_CASES if not c.endswith("_ml")]
ML_CASES = [c for c in LMER_CASES if c.endswith("_ml")]


_fit = fit_reference


@pytest.fixture(scope="module", params=REML_CASES)
def fitted(request, reference_fit):
    return reference_fit(request.param)


def test_kenward_roger_coefficients(fitted):
    ref, res = fitted
    assert ref["fixed"]["kenward_roger_status"] == "ok"
    tab = res.fixed("kenward-roger")
    case = ref["case"]
    # R: coef(summary(m, ddf = "Kenward-Roger"))[, "df"]
    assert_close(tab["df"], ref["fixed"]["df_kenward_roger"], 1e-3,
                 f"{case}: coef(summary(m, ddf='Kenward-Roger'))[, 'df']")
    # R: ... [, "Std. Error"] = sqrt(diag(pbkrtest::vcovAdj(m)))
    assert_close(tab["std_err"], ref["fixed"]["se_kenward_roger"], 1e-3,
                 f"{case}: coef(summary(m, ddf='Kenward-Roger'))[, 'Std. Error']")
    # R: ... [, "t value"], [, "Pr(>|t|)"]
    assert_close(tab["t"], ref["fixed"]["t_kenward_roger"], 1e-3,
                 f"{case}: coef(summary(m, ddf='Kenward-Roger'))[, 't value']")
    assert_close(tab["p"], ref["fixed"]["p_kenward_roger"], 1e-3,
                 f"{case}: coef(summary(m, ddf='Kenward-Roger'))[, 'Pr(>|t|)']", atol=1e-10)


def test_unadjusted_covariance_is_vcov(fitted):
    ref, res = fitted
    kr = res._inference.kenward_roger
    # R: vcov(m) -- pbkrtest's Phi, rebuilt here from the blocked factor (Woodbury)
    vc = np.array(ref["vcov_fixed"]["matrix"]).reshape(res.design.p, res.design.p)
    assert_close(kr.phi, vc, 1e-4, f"{ref['case']}: vcov(m)")
    # the adjustment only inflates: vcovAdj(m) - vcov(m) is positive semi-definite
    assert np.min(np.linalg.eigvalsh(kr.phi_adj - kr.phi)) > -1e-10 * np.abs(kr.phi).max()


@pytest.mark.parametrize("case", ML_CASES)
def test_ml_fit_refused(case):
    ref, res = _fit(case)
    # R: summary(m, ddf = "Kenward-Roger") on an ML fit -> lmerTest's error
    assert ref["fixed"]["kenward_roger_status"].startswith("error")
    with pytest.raises(ValueError, match="only available for REML model fits"):
        res.fixed("kenward-roger")
    with pytest.raises(ValueError, match="only available for REML model fits"):
        res.anova(3, ddf="kenward-roger")


def test_contrast_kenward_roger_matches_table():
    ref, res = _fit("sleepstudy_unbalanced_reml")
    # R: contest1D(m, c(0, 1), ddf = "Kenward-Roger") equals row "Days" of the KR summary
    out = res.contrast([0.0, 1.0], ddf="kenward-roger")
    assert out.df == pytest.approx(ref["fixed"]["df_kenward_roger"][1], rel=1e-3)
    assert out.std_err.iloc[0] == pytest.approx(ref["fixed"]["se_kenward_roger"][1], rel=1e-3)
    assert out.p == pytest.approx(ref["fixed"]["p_kenward_roger"][1], rel=1e-3)
