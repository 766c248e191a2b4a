"""ANOVA fits from data: sums of squares, EMS, F tests, moment estimates.

Reference numbers come from R 4.2.2 (tests/reference/*.json, see its README):
* ``aov``: ``summary(aov(<aov formula with Error()>))`` strata;
* ``ems``: the EMS table of the balanced design (components, coefficients, error terms);
* ``moments``: ``anova(lm(<lm_formula>))`` sums of squares with F and p against the
  EMS error term, and the method-of-moments estimates.
Unbalanced cases are checked against hand computations done here with plain numpy.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedanova.datasets
from mixedanova.moments.ems_table import coef_column
from mixedanova.moments.moments import (
    METHOD_III,
    METHOD_RULES,
    fit_anova,
    varcomp_ci,
    varcomp_table,
)

REF = Path(__file__).resolve().parent.parent / "reference"
DATA = mixedanova.datasets.data_dir()

# case -> (formula as in the JSON, response, fixed terms, random terms)
CASES = {
    "dyestuff_reml": ("Yield ~ 1 + (1|Batch)", "Yield", [], [("Batch",)]),
    "dyestuff_ml": ("Yield ~ 1 + (1|Batch)", "Yield", [], [("Batch",)]),
    "dyestuff2_reml": ("Yield ~ 1 + (1|Batch)", "Yield", [], [("Batch",)]),
    "rail_reml": ("travel ~ 1 + (1|Rail)", "travel", [], [("Rail",)]),
    "penicillin_crossed_reml": ("diameter ~ 1 + (1|plate) + (1|sample)", "diameter", [],
                                [("plate",), ("sample",)]),
    "pastes_nested_reml": ("strength ~ 1 + (1|batch) + (1|batch:cask)", "strength", [],
                           [("batch",), ("batch", "cask")]),
    "ergostool_reml": ("effort ~ Type + (1|Subject)", "effort", [("Type",)], [("Subject",)]),
    "bhh_penicillin_reml": ("yield ~ treat + (1|blend)", "yield", [("treat",)], [("blend",)]),
    "oats_splitplot_reml": ("yield ~ Variety * nitro_f + (1|Block) + (1|Block:Variety)", "yield",
                            [("Variety",), ("nitro_f",), ("Variety", "nitro_f")],
                            [("Block",), ("Block", "Variety")]),
    "cake_reml": ("angle ~ recipe * temperature + (1|recipe:replicate)", "angle",
                  [("recipe",), ("temperature",), ("recipe", "temperature")],
                  [("recipe", "replicate")]),
}


@lru_cache(maxsize=None)
def load_case(case):
    """Reference JSON and the fit of its model (cached; tests only read the result)."""
    ref = json.loads((REF / f"{case}.json").read_text())
    formula, response, fixed, rand = CASES[case]
    assert ref["formula"] == formula, "test mapping out of date with the reference file"
    data = pd.read_csv(DATA / ref["dataset"])
    return ref, fit_anova(data, response, fixed, rand)


def load(name):
    return pd.read_csv(DATA / f"{name}.csv")


# ------------------------------------------------------------ R reference cases
@pytest.mark.parametrize("case", sorted(CASES))
def test_moments_table(case):
    ref, st = load_case(case)
    assert st.method == METHOD_RULES and st.table.attrs["method"] == METHOD_RULES
    tab = st.table
    assert set(tab.index) == {r["source"] for r in ref["moments"]["table"]}
    for r in ref["moments"]["table"]:
        s = r["source"]
        # R: anova(lm(<moments$lm_formula>)) with F, p against the EMS error term
        assert tab.at[s, "df"] == r["df"], s
        assert tab.at[s, "sum_sq"] == pytest.approx(r["sum_sq"], rel=1e-8), s
        assert tab.at[s, "mean_sq"] == pytest.approx(r["mean_sq"], rel=1e-8), s
        if r["F"] is None:
            assert np.isnan(tab.at[s, "F"]) and np.isnan(tab.at[s, "p"])
            assert tab.at[s, "error_term"] is None
        else:
            assert tab.at[s, "error_term"] == r["error_term"], s
            assert tab.at[s, "F"] == pytest.approx(r["F"], rel=1e-6), s
            assert tab.at[s, "p"] == pytest.approx(r["p"], rel=1e-6), s


@pytest.mark.parametrize("case", sorted(CASES))
def test_ems_coefficients_exact(case):
    ref, st = load_case(case)
    # R reference `ems`: components and the EMS coefficient table of the balanced design
    assert set(st.components) == set(ref["ems"]["components"])
    assert st.components[-1] == "Residual"
    for src in ref["ems"]["sources"]:
        s = src["source"]
        for comp in ref["ems"]["components"]:
            assert st.table.at[s, coef_column(comp)] == src["coefficients"].get(comp, 0), (s, comp)
        assert bool(st.table.at[s, "Q"]) == src["fixed_effect_term"], s
        if src["fixed_part"] is not None:
            assert st.table.at[s, "ems"].endswith(src["fixed_part"]), s
        assert st.table.at[s, "error_term"] == src["error_term"], s
        assert st.table.at[s, "df"] == src["df"], s


@pytest.mark.parametrize("case", sorted(CASES))
def test_aov_strata(case):
    ref, st = load_case(case)
    tab = st.table
    # R: summary(aov(<aov$formula>)); a stratum's Residuals row is the stratum's source
    for stratum in ref["aov"]["strata"]:
        for r in stratum["rows"]:
            if r["source"] == "Residuals":
                s = "Residual" if stratum["stratum"] == "Within" else stratum["stratum"]
            else:
                s = r["source"]
            assert tab.at[s, "df"] == r["df"], s
            assert tab.at[s, "sum_sq"] == pytest.approx(r["sum_sq"], rel=1e-8), s
            assert tab.at[s, "mean_sq"] == pytest.approx(r["mean_sq"], rel=1e-8), s
            if r["F"] is not None:
                assert tab.at[s, "F"] == pytest.approx(r["F"], rel=1e-6), s
                assert tab.at[s, "p"] == pytest.approx(r["p"], rel=1e-6), s


@pytest.mark.parametrize("case", sorted(CASES))
def test_moment_estimates(case):
    ref, st = load_case(case)
    mom = ref["moments"]
    # R reference `moments$estimates`, `estimates_truncated_at_zero`, `sd`
    for comp, v in mom["estimates"].items():
        assert st.estimates[comp] == pytest.approx(v, rel=1e-8), comp
        assert bool(st.negative[comp]) == (v < 0), comp
    for comp, v in mom["estimates_truncated_at_zero"].items():
        assert st.estimates_truncated[comp] == pytest.approx(v, rel=1e-8, abs=0), comp
    vc = varcomp_table(st)
    for comp, v in mom["sd"].items():
        assert vc.at[comp, "sd"] == pytest.approx(v, rel=1e-8, abs=0), comp


@pytest.mark.parametrize("case", sorted(CASES))
def test_method3_equals_rules_on_balanced_data(case):
    ref, st = load_case(case)
    formula, response, fixed, rand = CASES[case]
    m3 = fit_anova(pd.read_csv(DATA / ref["dataset"]), response, fixed, rand, method="method3")
    assert m3.method == METHOD_III
    # Henderson III traces reproduce the rules' coefficients (R reference `ems`) on balanced data
    for src in ref["ems"]["sources"]:
        for comp in ref["ems"]["components"]:
            assert m3.table.at[src["source"], coef_column(comp)] == pytest.approx(
                src["coefficients"].get(comp, 0), rel=1e-10, abs=1e-10)
    for comp, v in ref["moments"]["estimates"].items():
        assert m3.estimates[comp] == pytest.approx(v, rel=1e-8), comp


def test_table_row_order():
    # decision: fixed terms by degree, random terms by degree, Residual
    _, st = load_case("oats_splitplot_reml")
    assert list(st.table.index) == ["Variety", "nitro_f", "Variety:nitro_f", "Block",
                                    "Block:Variety", "Residual"]
    assert st.table.at["Block", "ems"] == "s2_e + 4 s2_Block:Variety + 12 s2_Block"
    assert st.table.at["Variety", "ems"] == "s2_e + 4 s2_Block:Variety + Q(Variety)"
    assert st.components == ("Block", "Block:Variety", "Residual")


# ------------------------------------------------------ restricted model on data
def test_oats_restricted_model():
    # Montgomery sec. 13.3 restricted mixed model: the Block:Variety interaction (Variety
    # fixed) drops out of E(MS_Block), so Block is tested against the residual.
    # Mean squares from R: summary(aov(yield ~ Variety * nitro_f + Error(Block/Variety)))
    oats = load("oats")
    st = fit_anova(oats, "yield", CASES["oats_splitplot_reml"][2], CASES["oats_splitplot_reml"][3],
                   ems="restricted")
    ms_block, ms_bv, ms_e = 3175.05555555556, 601.330555555557, 177.083333333333
    assert st.ems_model == "restricted"
    assert st.table.at["Block", "ems"] == "s2_e + 12 s2_Block"
    assert st.table.at["Block", "error_term"] == "Residual"
    assert st.table.at["Block", "F"] == pytest.approx(ms_block / ms_e, rel=1e-6)
    assert st.table.at["Block", "p"] == pytest.approx(stats.f.sf(ms_block / ms_e, 5, 45), rel=1e-6)
    assert st.table.at["Variety", "error_term"] == "Block:Variety"
    assert st.estimates["Block"] == pytest.approx((ms_block - ms_e) / 12, rel=1e-8)
    assert st.estimates["Block:Variety"] == pytest.approx((ms_bv - ms_e) / 4, rel=1e-8)


def test_cake_random_nested_in_fixed_restricted():
    # replicate (random) nested in recipe (fixed): handled by both models; split-plot
    # E(MS_recipe) = s2_e + 6 s2_recipe:replicate + Q(recipe)  (R reference `ems` of cake_reml)
    _, _, fixed, rand = CASES["cake_reml"]
    st = fit_anova(load("cake"), "angle", fixed, rand, ems="restricted")
    assert st.table.at["recipe", "ems"] == "s2_e + 6 s2_recipe:replicate + Q(recipe)"
    assert st.table.at["recipe", "error_term"] == "recipe:replicate"


# -------------------------------------------------------------- quasi-F on data
def test_three_random_crossed_quasi_f_from_data():
    # Montgomery sec. 13.6 approximate F test, checked against sums of squares computed
    # by hand from cell means of a simulated balanced a x b x c x n layout
    rng = np.random.default_rng(20240601)
    a, b, c, n = 4, 3, 5, 2
    y = (rng.normal(size=(a, b, c, n)) + rng.normal(size=(a, 1, 1, 1))
         + rng.normal(size=(a, b, 1, 1)) + rng.normal(size=(1, b, c, 1)))
    idx = np.indices(y.shape).reshape(4, -1)
    df = pd.DataFrame({"A": [f"a{i}" for i in idx[0]], "B": [f"b{j}" for j in idx[1]],
                       "C": [f"c{k}" for k in idx[2]], "y": y.ravel()})
    g = y.mean()
    mi, mj, mk = y.mean((1, 2, 3)), y.mean((0, 2, 3)), y.mean((0, 1, 3))
    mij, mik, mjk = y.mean((2, 3)), y.mean((1, 3)), y.mean((0, 3))
    mijk = y.mean(3)
    ss = {
        "A": b * c * n * np.sum((mi - g) ** 2),
        "A:B": c * n * np.sum((mij - mi[:, None] - mj[None, :] + g) ** 2),
        "A:C": b * n * np.sum((mik - mi[:, None] - mk[None, :] + g) ** 2),
        "A:B:C": n * np.sum((mijk - mij[:, :, None] - mik[:, None, :] - mjk[None, :, :]
                             + mi[:, None, None] + mj[None, :, None] + mk[None, None, :] - g) ** 2),
        "Residual": np.sum((y - mijk[..., None]) ** 2),
    }
    dfs = {"A": 3, "A:B": 6, "A:C": 12, "A:B:C": 24, "Residual": 60}
    ms = {k: ss[k] / dfs[k] for k in ss}
    terms = [("A",), ("B",), ("C",), ("A", "B"), ("A", "C"), ("B", "C"), ("A", "B", "C")]
    st = fit_anova(df, "y", [], terms)
    for k in ss:
        assert st.table.at[k, "sum_sq"] == pytest.approx(ss[k], rel=1e-8), k
    den = ms["A:B"] + ms["A:C"] - ms["A:B:C"]
    nu = den**2 / (ms["A:B"] ** 2 / 6 + ms["A:C"] ** 2 / 12 + ms["A:B:C"] ** 2 / 24)
    assert st.table.at["A", "error_term"] == "A:B + A:C - A:B:C"
    assert st.table.at["A", "test"] == "quasi-F (Satterthwaite)"
    assert st.table.at["A", "F"] == pytest.approx(ms["A"] / den, rel=1e-6)
    assert st.table.at["A", "den_df"] == pytest.approx(nu, rel=1e-6)
    assert st.table.at["A", "p"] == pytest.approx(stats.f.sf(ms["A"] / den, 3, nu), rel=1e-6)
    # moment estimate of s2_A = (MS_A - MS_AB - MS_AC + MS_ABC) / (bcn)
    assert st.estimates["A"] == pytest.approx(
        (ms["A"] - ms["A:B"] - ms["A:C"] + ms["A:B:C"]) / (b * c * n), rel=1e-8)


# ------------------------------------------------------------- unbalanced data
def test_unbalanced_sleepstudy_method3_by_hand():
    # Henderson Method III (SAS PROC VARCOMP METHOD=TYPE1): Reaction ~ Days + (1|Subject)
    # on sleepstudy with every 7th row removed; hand computation with explicit projections
    d = load("sleepstudy_unbalanced")
    st = fit_anova(d, "Reaction", [("Days",)], [("Subject",)])
    assert st.method == METHOD_III and st.table.attrs["method"] == METHOD_III
    assert "covariate" in st.note and "Days" in st.note
    y = d["Reaction"].to_numpy(float)
    nobs = y.size
    one = np.ones((nobs, 1))
    x1 = np.column_stack([one, d["Days"].to_numpy(float)])
    z = (d["Subject"].to_numpy()[:, None] == np.unique(d["Subject"])[None, :]).astype(float)

    def hat(x):
        return x @ np.linalg.pinv(x)

    h0, h1, h2 = hat(one), hat(x1), hat(np.hstack([x1, z]))
    ss_days = y @ (h1 - h0) @ y
    ss_subj = y @ (h2 - h1) @ y
    ss_e = y @ (np.eye(nobs) - h2) @ y
    df_subj, df_e = z.shape[1] - 1, nobs - z.shape[1] - 1
    k_subj = np.trace(z.T @ (h2 - h1) @ z) / df_subj
    k_days = np.trace(z.T @ (h1 - h0) @ z) / 1
    s2_e = ss_e / df_e
    s2_s = (ss_subj / df_subj - s2_e) / k_subj
    t = st.table
    assert t.at["Days", "sum_sq"] == pytest.approx(ss_days, rel=1e-8)
    assert t.at["Subject", "sum_sq"] == pytest.approx(ss_subj, rel=1e-8)
    assert t.at["Residual", "sum_sq"] == pytest.approx(ss_e, rel=1e-8)
    assert t.at["Subject", "df"] == df_subj and t.at["Residual", "df"] == df_e
    assert t.at["Subject", "s2_Subject"] == pytest.approx(k_subj, rel=1e-8)
    assert t.at["Days", "s2_Subject"] == pytest.approx(k_days, rel=1e-8)
    assert st.estimates["Residual"] == pytest.approx(s2_e, rel=1e-8)
    assert st.estimates["Subject"] == pytest.approx(s2_s, rel=1e-8)
    # the fixed Days test: denominator (k_days/k_subj) MS_Subject + (1 - k_days/k_subj) MS_E
    w = k_days / k_subj
    den = w * ss_subj / df_subj + (1 - w) * s2_e
    nu = den**2 / ((w * ss_subj / df_subj) ** 2 / df_subj + ((1 - w) * s2_e) ** 2 / df_e)
    assert t.at["Days", "F"] == pytest.approx(ss_days / den, rel=1e-6)
    assert t.at["Days", "den_df"] == pytest.approx(nu, rel=1e-6)
    assert t.at["Days", "p"] == pytest.approx(stats.f.sf(ss_days / den, 1, nu), rel=1e-6)
    assert t.at["Subject", "F"] == pytest.approx(ss_subj / df_subj / s2_e, rel=1e-6)


def test_unbalanced_oneway_method3_by_hand():
    # one-way random model with unequal n_j (Searle, Casella & McCulloch, Variance
    # Components, sec. 3.5): s2_A = (MS_A - MS_E) / n0, n0 = (n - sum n_j^2 / n) / (J - 1)
    d = load("dyestuff").drop(index=[0, 1, 7, 8, 9, 13, 22]).reset_index(drop=True)
    st = fit_anova(d, "Yield", [], [("Batch",)])
    assert st.method == METHOD_III
    assert "range from 2 to 5" in st.note
    groups = [g.to_numpy(float) for _, g in d.groupby("Batch")["Yield"]]
    nj = np.array([len(g) for g in groups], float)
    nobs, ngr = nj.sum(), len(groups)
    ybar = np.concatenate(groups).mean()
    ms_a = sum(len(g) * (g.mean() - ybar) ** 2 for g in groups) / (ngr - 1)
    ms_e = sum(((g - g.mean()) ** 2).sum() for g in groups) / (nobs - ngr)
    n0 = (nobs - (nj**2).sum() / nobs) / (ngr - 1)
    assert st.table.at["Batch", "mean_sq"] == pytest.approx(ms_a, rel=1e-8)
    assert st.table.at["Batch", "s2_Batch"] == pytest.approx(n0, rel=1e-8)
    assert st.estimates["Residual"] == pytest.approx(ms_e, rel=1e-8)
    assert st.estimates["Batch"] == pytest.approx((ms_a - ms_e) / n0, rel=1e-8)
    assert st.table.at["Batch", "ems"] == f"s2_e + {n0:.6g} s2_Batch"


# ---------------------------------------------------- SEs and intervals
def test_component_se_by_hand():
    # issue item 3: SE of sum a_i MS_i = sqrt(2 sum a_i^2 MS_i^2 / (df_i + 2)); pastes:
    # s2_batch = (MS_batch - MS_batch:cask) / 6 with R's mean squares 27.4891851851852 (9 df),
    # 17.5453333333333 (20 df)  (R: summary(aov(strength ~ 1 + Error(batch/cask))))
    _, st = load_case("pastes_nested_reml")
    mb, mbc = 27.4891851851852, 17.5453333333333
    se_batch = math.sqrt(2 * ((mb / 6) ** 2 / 11 + (mbc / 6) ** 2 / 22))
    assert st.se["batch"] == pytest.approx(se_batch, rel=1e-8)
    assert st.se["Residual"] == pytest.approx(math.sqrt(2 * 0.678**2 / 32), rel=1e-8)


def test_user_combination_ci_by_hand():
    # issue item 3: V(Y_ij) = s2_blend + s2_e in the BHH penicillin RCBD; R mean squares
    # MS_blend = 66 (4 df), MS_E = 18.8333333333333 (12 df)
    # (R: summary(aov(yield ~ treat + Error(blend)))); V = MS_blend/4 + (3/4) MS_E
    _, st = load_case("bhh_penicillin_reml")
    mb, me = 66.0, 18.8333333333333
    parts = np.array([mb / 4, 0.75 * me])
    v = parts.sum()
    nu = v**2 / (parts[0] ** 2 / 4 + parts[1] ** 2 / 12)
    ci = varcomp_ci(st, "V(Y_ij) = s2_blend + s2_e", level=0.90)
    assert ci.estimate == pytest.approx(v, rel=1e-8)
    assert ci.se == pytest.approx(math.sqrt(2 * (parts[0] ** 2 / 6 + parts[1] ** 2 / 14)), rel=1e-8)
    assert ci.df == pytest.approx(nu, rel=1e-8)
    assert ci.lower == pytest.approx(nu * v / stats.chi2.ppf(0.95, nu), rel=1e-8)
    assert ci.upper == pytest.approx(nu * v / stats.chi2.ppf(0.05, nu), rel=1e-8)
    same = varcomp_ci(st, {"blend": 1, "Residual": 1}, level=0.90)
    assert same.lower == ci.lower and same.upper == ci.upper
    assert varcomp_ci(st, "2*s2_blend - s2_e").estimate == pytest.approx(
        2 * (mb - me) / 4 - me, rel=1e-8)


def test_residual_ci_is_exact_chi_square():
    # Residual: nu * s2 / chi2 with nu = residual df (the classical exact interval)
    _, st = load_case("rail_reml")
    ci = varcomp_ci(st, "s2_e")
    s2 = 194 / 12  # R: Within-stratum residual SS 194 on 12 df
    assert ci.df == pytest.approx(12, rel=1e-8)
    assert ci.lower == pytest.approx(12 * s2 / stats.chi2.ppf(0.975, 12), rel=1e-8)


def test_negative_estimate_reported_and_flagged():
    # R reference dyestuff2_reml `moments`: estimate -1.321912768, truncated 0
    _, st = load_case("dyestuff2_reml")
    vc = varcomp_table(st)
    assert vc.at["Batch", "negative"]
    assert vc.at["Batch", "estimate"] == pytest.approx(-1.321912768, rel=1e-8)
    assert vc.at["Batch", "truncated"] == 0
    assert np.isnan(vc.at["Batch", "lower"])


def test_unknown_component_in_combination():
    _, st = load_case("bhh_penicillin_reml")
    with pytest.raises(ValueError, match="unknown variance component 's2_block'"):
        varcomp_ci(st, "s2_block + s2_e")


# ------------------------------------------------------------------ bad input
def test_empty_cell_auto_uses_method3_and_rules_refuse():
    pen = load("penicillin").iloc[1:]  # drop plate a x sample A
    st = fit_anova(pen, "diameter", [], [("plate",), ("sample",)])
    assert st.method == METHOD_III and st.table.attrs["method"] == METHOD_III
    assert "1 empty" in st.note and "plate=a, sample=A" in st.note
    with pytest.raises(ValueError, match=r"1 empty \(e\.g\. plate=a, sample=A\)"):
        fit_anova(pen, "diameter", [], [("plate",), ("sample",)], method="rules")
    with pytest.raises(ValueError, match="restricted model is only defined for balanced"):
        fit_anova(pen, "diameter", [], [("plate",), ("sample",)], ems="restricted")


def test_unequal_cell_counts_named():
    d = load("dyestuff")
    d = pd.concat([d, d.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="cell counts of Batch range from 5 to 6"):
        fit_anova(d, "Yield", [], [("Batch",)], method="rules")


def test_restricted_needs_random_factor_in_random_term():
    with pytest.raises(ValueError, match="random term 'Block:Variety' contains no random factor"):
        fit_anova(load("oats"), "yield", [("Block",), ("Variety",), ("nitro_f",)],
                  [("Block", "Variety")], ems="restricted")


def test_covariate_refused_by_rules():
    with pytest.raises(ValueError, match="numeric covariate 'Days'"):
        fit_anova(load("sleepstudy"), "Reaction", [("Days",)], [("Subject",)], method="rules")


def test_fixed_term_containing_random_term():
    msg = "fixed term 'Block:Variety' contains the random term 'Block'"
    with pytest.raises(ValueError, match=msg):
        fit_anova(load("oats"), "yield", [("Variety",), ("Block", "Variety")], [("Block",)])


def test_random_term_without_df():
    d = load("ergostool")
    d["Stool"] = "S" + d["Type"].astype(str)  # a relabelled copy of the fixed Type
    with pytest.raises(ValueError, match="random term 'Stool' has no degrees of freedom"):
        fit_anova(d, "effort", [("Type",)], [("Stool",)])


def test_saturated_model():
    with pytest.raises(ValueError, match="no residual degrees of freedom"):
        fit_anova(load("penicillin"), "diameter", [],
                  [("plate",), ("sample",), ("plate", "sample")])


def test_missing_column_and_values():
    d = load("dyestuff")
    with pytest.raises(ValueError, match="variable 'batch' is not a column"):
        fit_anova(d, "Yield", [], [("batch",)])
    d.loc[3, "Yield"] = np.nan
    with pytest.raises(ValueError, match="column 'Yield' has 1 missing value"):
        fit_anova(d, "Yield", [], [("Batch",)])


def test_non_hierarchical_model_falls_back():
    # Variety occurs only inside Variety:nitro_f and Block:Variety, never as a main effect:
    # outside the rules; auto says why and uses Method III
    st = fit_anova(load("oats"), "yield", [("Variety", "nitro_f")],
                   [("Block",), ("Block", "Variety")])
    assert st.method == METHOD_III
    assert "not hierarchical" in st.note and "'Variety'" in st.note


def test_variables_always_together_form_one_factor():
    # (1|recipe:replicate)-style terms: variables that only occur together act as one factor
    # (here the 12 Variety x nitro cells, 11 df), so the rules still apply
    st = fit_anova(load("oats"), "yield", [("Variety", "nitro_f")], [("Block",)])
    assert st.method == METHOD_RULES
    assert st.table.at["Variety:nitro_f", "df"] == 11
    assert st.table.at["Block", "ems"] == "s2_e + 12 s2_Block"


def test_bad_options():
    d = load("dyestuff")
    with pytest.raises(ValueError, match="method must be"):
        fit_anova(d, "Yield", [], [("Batch",)], method="reml")
    with pytest.raises(ValueError, match="ems must be"):
        fit_anova(d, "Yield", [], [("Batch",)], ems="sas")


# ------------------------------------------- rules vs traces on deeper designs
def _balanced_frame(levels, nested, replicates, seed):
    """Balanced layout: levels per parent cell; nested factors get parent-specific labels."""
    rng = np.random.default_rng(seed)
    names = list(levels)
    grid = np.indices([levels[k] for k in names] + [replicates]).reshape(len(names) + 1, -1)
    frame = pd.DataFrame({k: [f"{k}{v}" for v in grid[i]] for i, k in enumerate(names)})
    for k, parents in nested.items():
        for p in parents:
            frame[k] = frame[p] + "/" + frame[k]
    frame["y"] = rng.normal(size=len(frame))
    return frame


@pytest.mark.parametrize("levels,nested,fixed,rand", [
    # four-stage nested, all random (Montgomery ch. 14, general m-stage nested design)
    ({"A": 3, "B": 2, "C": 3}, {"B": ["A"], "C": ["A", "B"]}, [],
     [("A",), ("A", "B"), ("A", "B", "C")]),
    # A fixed crossed with B random, C random nested in B
    ({"A": 2, "B": 3, "C": 2}, {"C": ["B"]}, [("A",)],
     [("B",), ("A", "B"), ("B", "C"), ("A", "B", "C")]),
    # three-factor mixed model, A fixed, B and C random, full factorial
    ({"A": 2, "B": 3, "C": 4}, {}, [("A",)],
     [("B",), ("C",), ("A", "B"), ("A", "C"), ("B", "C"), ("A", "B", "C")]),
])
def test_rules_agree_with_traces(levels, nested, fixed, rand):
    # cross-check of two independent algorithms: the subscript rules (unrestricted) and
    # Henderson III traces tr(Z' M Z)/df must give identical EMS on balanced data
    d = _balanced_frame(levels, nested, 2, seed=len(rand))
    rules = fit_anova(d, "y", fixed, rand, method="rules")
    traces = fit_anova(d, "y", fixed, rand, method="method3")
    cols = [coef_column(c) for c in rules.components]
    assert np.array_equal(rules.table["df"], traces.table["df"])
    np.testing.assert_allclose(traces.table[cols].to_numpy(float), rules.table[cols].to_numpy(float),
                               rtol=1e-10, atol=1e-10)
    assert list(rules.table["error_term"]) == list(traces.table["error_term"])


def test_varcomp_ci_prints_as_text_not_a_dataclass_repr():
    # issue 22: print(ma.varcomp_ci(...)) showed the dataclass repr
    import mixedanova as ma
    pigment = ma.ems_table_from_text({
        "batch": (14, 86.495, "s2_e + 2 s2_sample + 4 s2_batch"),
        "sample": (15, 57.983, "s2_e + 2 s2_sample"),
        "test": (30, 0.917, "s2_e")})
    ci = ma.varcomp_ci(ma.moments_from_mean_squares(pigment),
                       "V(Y) = s2_batch + s2_sample + s2_e")
    text = repr(ci)
    assert "VarcompInterval(" not in text
    assert text.startswith("s2_batch + s2_sample + s2_Residual: estimate 36.578")
    assert "95% Cochran-Satterthwaite interval" in text
    frame = ci.to_frame()
    assert list(frame.columns) == ["estimate", "SE", "df", "lower", "upper"]
    assert frame["estimate"].iloc[0] == ci.estimate
