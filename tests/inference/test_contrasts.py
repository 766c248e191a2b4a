"""Contrasts ``res.contrast(L)``: lmerTest's ``contest1D`` / ``contestMD``.

One row gives a t test, several an F test; references are the summary and
ANOVA rows of tests/reference (the same tests expressed as contrasts).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.inference.tables import EstimabilityError
from _refdata import load_reference, fit_reference


_fit = fit_reference


@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward-roger"])
def test_f_test_of_a_term_matches_anova_row(ddf):
    ref, res = _fit("oats_splitplot_reml")
    key = "satterthwaite" if ddf == "satterthwaite" else "kenward_roger"
    row = ref["anova_type3"][key]["table"][1]  # nitro_f
    L = res.anova(3, ddf).hypotheses["nitro_f"]
    # R: contestMD(m, L_nitro_f, ddf = ...) == anova(m, type = 3, ddf = ...)["nitro_f", ]
    out = res.contrast(L, ddf=ddf)
    assert out.test == "F" and out.num_df == row["num_df"]
    assert out.statistic == pytest.approx(row["F"], rel=1e-3)
    assert out.df == pytest.approx(row["den_df"], rel=1e-3)
    assert out.p == pytest.approx(row["p"], rel=1e-3, abs=1e-10)
    assert out.extra["mean_sq"] == pytest.approx(row["mean_sq"], rel=1e-3)
    frame = out.to_frame()
    assert list(frame.columns) == ["num_df", "den_df", "F", "p"]


def test_contrast_by_name_and_rank_deficient_rows():
    ref, res = _fit("ergostool_reml")
    names = list(res.fe_params.index)
    # R: contest1D(m, c(0, 1, -1, 0)) -- T2 vs T3, given by name
    by_name = res.contrast({names[1]: 1.0, names[2]: -1.0})
    by_vec = res.contrast([0.0, 1.0, -1.0, 0.0])
    assert by_name.statistic == pytest.approx(by_vec.statistic, rel=1e-12)
    assert by_name.estimate.iloc[0] == pytest.approx(3.88888888888889 - 2.22222222222222)
    # R: contestMD(m, rbind(c(0,1,0,0), c(0,0,1,0), c(0,1,1,0))) has NumDF 2
    L = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0.0]])
    out = res.contrast(L)
    assert out.num_df == 2
    frame = pd.DataFrame(L[:2], columns=names, index=["T2", "T3"])
    assert res.contrast(frame).statistic == pytest.approx(out.statistic, rel=1e-10)


def test_rhs_shifts_the_hypothesis():
    ref, res = _fit("sleepstudy_reml")
    # R: contest1D(m, c(0, 1), rhs = 10)
    out = res.contrast([0, 1], rhs=10.0)
    est, se = ref["fixed"]["estimate"][1], ref["fixed"]["se"][1]
    assert out.statistic == pytest.approx((est - 10.0) / se, rel=1e-4)
    assert out.ci_low < 10.0 < out.ci_high


def _aliased_fit():
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(12), 5)
    x1 = rng.normal(size=60)
    data = pd.DataFrame({"g": g, "x1": x1, "x2": 2.0 * x1, "x3": rng.normal(size=60)})
    data["y"] = 1 + x1 + 0.5 * data["x3"] + rng.normal(size=12)[g] + rng.normal(size=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ma.lmm("y ~ x1 + x2 + x3 + (1|g)", data)


def test_non_estimable_contrast_is_an_error():
    res = _aliased_fit()
    assert res.design.dropped_columns == ("x2",)
    # over all formula columns (Intercept, x1, x2, x3): x1 alone is not estimable
    with pytest.raises(EstimabilityError, match="not estimable"):
        res.contrast([0.0, 1.0, 0.0, 0.0])
    with pytest.raises(EstimabilityError):
        res.contrast({"x2": 1.0})
    # x1 + 2 x2 is: it is the x1 coefficient of the reduced fit
    ok = res.contrast([0.0, 1.0, 2.0, 0.0])
    assert ok.estimate.iloc[0] == pytest.approx(res.fe_params["x1"], rel=1e-12)
    # over the fitted coefficients every L is estimable
    assert res.contrast([0.0, 1.0, 0.0]).estimate.iloc[0] == pytest.approx(res.fe_params["x1"])
    with pytest.raises(ValueError, match="columns"):
        res.contrast([1.0, 0.0])
