"""ma.lmm(..., method="ANOVA") end to end against the R references (issue 3).

Each case's ``moments`` entry is R's sequential ``anova(lm(lm_formula))`` with F
and p against the EMS error term, its ``ems`` entry the EMS coefficients, and its
``moments.estimates`` the method-of-moments variance components.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _refdata import assert_close, load_reference

CASES = ["dyestuff_reml", "dyestuff2_reml", "rail_reml", "penicillin_crossed_reml",
         "pastes_nested_reml", "ergostool_reml", "bhh_penicillin_reml",
         "oats_splitplot_reml", "cake_reml"]


def _coef_col(component: str) -> str:
    return "s2_e" if component == "Residual" else f"s2_{component}"


@pytest.fixture(scope="module", params=CASES)
def anova_fit(request):
    ref = load_reference(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.SingularFitWarning)
        res = ma.lmm(ref["formula"], ma.load_dataset(ref["dataset"][:-4]), method="ANOVA")
    return ref, res


def test_sums_of_squares_and_tests(anova_fit):
    ref, res = anova_fit
    tab = res.ems_table()
    assert tab.attrs["method"] == "EMS rules (balanced)"
    for row in ref["moments"]["table"]:
        src = row["source"]
        ours = tab.loc[src]
        # R: anova(lm(lm_formula)) -> Df, Sum Sq, Mean Sq
        assert ours["df"] == row["df"], f"Df of {src}"
        assert_close(ours["sum_sq"], row["sum_sq"], 1e-8, f"Sum Sq of {src}")
        assert_close(ours["mean_sq"], row["mean_sq"], 1e-8, f"Mean Sq of {src}")
        # R: F and p against the EMS error term
        if row["F"] is None:
            assert np.isnan(ours["F"])
        else:
            assert ours["error_term"] == row["error_term"], f"error term of {src}"
            assert_close(ours["F"], row["F"], 1e-6, f"F of {src}")
            assert_close(ours["p"], row["p"], 1e-6, f"p of {src}")


def test_ems_coefficients(anova_fit):
    ref, res = anova_fit
    tab = res.ems_table()
    comps = ref["ems"]["components"]
    for s in ref["ems"]["sources"]:
        ours = tab.loc[s["source"]]
        for c in comps:
            # exact integer coefficients of the expected mean square
            assert ours[_coef_col(c)] == s["coefficients"].get(c, 0), (s["source"], c)
        assert bool(ours["Q"]) == s["fixed_effect_term"]


def test_moment_estimates(anova_fit):
    ref, res = anova_fit
    est = res.moment_estimates
    for comp, value in ref["moments"]["estimates"].items():
        assert_close(est.loc[comp, "estimate"], value, 1e-8, f"moment estimate of {comp}")
        assert_close(est.loc[comp, "truncated"],
                     ref["moments"]["estimates_truncated_at_zero"][comp], 1e-8,
                     f"truncated estimate of {comp}")
    # the fit's variance components are the truncated moment estimates
    vc = res.varcomp
    for _, r in vc[vc["var2"].isna()].iterrows():
        assert_close(r["vcov"], ref["moments"]["estimates_truncated_at_zero"][r["group"]],
                     1e-8, f"varcomp {r['group']}", atol=1e-12)


def test_summary_prints_the_ems_table(anova_fit):
    ref, res = anova_fit
    text = str(res.summary())
    assert "EMS rules (balanced)" in text
    for s in ref["ems"]["sources"]:
        assert s["source"] in text


def test_unbalanced_uses_method3():
    df = ma.load_dataset("sleepstudy_unbalanced")
    res = ma.lmm("Reaction ~ Days + (1|Subject)", df, method="ANOVA")
    assert res.ems_method == "Henderson Method III (Type I SS)"
    assert "Henderson Method III" in str(res.summary())
    # the Residual estimate of Method III is the within-subject residual mean square
    # of the fixed + random fit: y ~ Days + Subject by least squares
    X = np.column_stack([np.ones(len(df)), df["Days"],
                         pd.get_dummies(df["Subject"], drop_first=True, dtype=float)])
    beta, *_ = np.linalg.lstsq(X, df["Reaction"].to_numpy(float), rcond=None)
    rss = np.sum((df["Reaction"].to_numpy(float) - X @ beta) ** 2)
    assert_close(res.moment_estimates.loc["Residual", "estimate"], rss / (len(df) - X.shape[1]),
                 1e-10, "Method III residual")


def test_restricted_model_option():
    df = ma.load_dataset("oats")
    f = "yield ~ Variety*nitro_f + (1|Block) + (1|Block:Variety)"
    res = ma.lmm(f, df, method="ANOVA", ems="restricted")
    tab = res.ems_table()
    # restricted: Block:Variety sums to zero over the fixed Variety levels, so it drops
    # out of the EMS of Block (Montgomery, restricted mixed model)
    assert tab.loc["Block", "s2_Block:Variety"] == 0
    assert tab.loc["Block", "error_term"] == "Residual"
