"""The moments engine reads coded variables, not a DataFrame (issue 17).

``lmm(..., method="ANOVA")`` hands the engine the design's response vector and
the variables' level codes (:class:`mixedanova.moments.anova_data.AnovaData`);
these tests check the codes against pandas and that both doors (design and
DataFrame) give the same fit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.design.variables import VariableCodes, variable_codes
from mixedanova.moments.anova_data import AnovaData, anova_data
from mixedanova.moments.anova_design import balanced_spec, prepare_terms
from mixedanova.moments.moments import fit_anova, fit_anova_data


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 60
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "a": rng.choice(["x", "b", "m"], size=n),
        "b": rng.integers(10, 14, size=n),
        "c": pd.Categorical(rng.choice(["lo", "hi"], size=n), categories=["lo", "hi"]),
        "x": rng.normal(size=n),
        "flag": rng.random(n) < 0.5,
    })


@pytest.mark.parametrize("cols", [["a"], ["b"], ["c"], ["a", "b"], ["c", "a"],
                                  ["a", "b", "c"], ["flag", "a"]])
def test_combination_codes_number_levels_as_sorted_groupby(cols):
    df = _frame()
    coded = anova_data(df, "y", cols)
    codes, m = coded.codes(cols)
    expected = df.groupby(cols, sort=True, observed=True).ngroup().to_numpy()
    np.testing.assert_array_equal(codes, expected)
    assert m == expected.max() + 1


def test_variable_kinds():
    df = _frame()
    assert variable_codes(df["x"], "x").numeric
    assert not variable_codes(df["flag"], "flag").numeric  # boolean: a factor
    assert variable_codes(df["a"], "a").values is None
    assert variable_codes(df["c"], "c").levels == ("lo", "hi")  # category order kept


def test_lmm_anova_gives_the_engine_the_design_vectors():
    d = ma.load_dataset("penicillin")
    res = ma.lmm("diameter ~ 1 + (1|plate) + (1|sample)", d, method="ANOVA")
    st = fit_anova(d, "diameter", [], [("plate",), ("sample",)])
    pd.testing.assert_frame_equal(res.anova_state.table, st.table)
    assert res.anova_state.response == "diameter"
    design = res.model.design
    coded = AnovaData(y=design.y, response="diameter",
                      variables=(design.variable("plate"), design.variable("sample")))
    st2 = fit_anova_data(coded, [], [("plate",), ("sample",)])
    pd.testing.assert_frame_equal(st2.table, st.table)


def test_expression_response_needs_no_made_up_column():
    d = ma.load_dataset("dyestuff")
    res = ma.lmm("np.log(Yield) ~ 1 + (1|Batch)", d, method="ANOVA")
    st = fit_anova(d.assign(logy=np.log(d["Yield"])), "logy", [], [("Batch",)])
    pd.testing.assert_series_equal(res.anova_state.estimates, st.estimates)
    assert res.anova_state.response == "np.log(Yield)"
    assert "(response)" not in res.model.design.data.columns


def test_engine_runs_on_hand_made_codes():
    # a balanced one-way layout given as codes only: no DataFrame anywhere
    y = np.array([1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 2.0, 2.5, 3.5])
    g = VariableCodes("g", np.repeat(np.arange(3), 3), ("p", "q", "r"))
    st = fit_anova_data(AnovaData(y, "y", (g,)), [], [("g",)])
    # one-way balanced ANOVA: MSB = 3 * var(group means), MSW = pooled variance
    means = y.reshape(3, 3).mean(axis=1)
    msb = 3 * np.var(means, ddof=1)
    msw = np.mean(y.reshape(3, 3).var(axis=1, ddof=1))
    assert st.table.loc["g", "mean_sq"] == pytest.approx(msb, rel=1e-12)
    assert st.table.loc["Residual", "mean_sq"] == pytest.approx(msw, rel=1e-12)
    assert st.balanced


def test_missing_cell_message_names_the_first_empty_cell():
    d = ma.load_dataset("penicillin")
    d = d[~((d["plate"] == "b") & (d["sample"] == "C"))]
    terms, cov = prepare_terms(d, "diameter", [], [("plate",), ("sample",)])
    spec, why = balanced_spec(anova_data(d, "diameter", ["plate", "sample"]), terms, cov)
    assert spec is None
    # pandas: the first (plate, sample) pair of the full product not observed
    full = pd.MultiIndex.from_product([sorted(d["plate"].unique()),
                                       sorted(d["sample"].unique())])
    seen = pd.MultiIndex.from_frame(d[["plate", "sample"]].drop_duplicates())
    first = full.difference(seen)[0]
    assert why == (f"not balanced: 143 of 144 cells of plate x sample are observed, 1 empty "
                   f"(e.g. plate={first[0]}, sample={first[1]})")
