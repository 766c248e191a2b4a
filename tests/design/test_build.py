"""build_design: response, X, the random-effects blocks and their codebooks, dropped rows.

Expected values are either lme4's (from the R reference records in tests/reference,
each naming its R expression) or worked out by hand from the data (the Z column of
observation i for term k is ``codes[i] * q + j``, lme4's ``getME(m, "Zt")`` layout).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _refdata import load_reference, r_name
from mixedanova.design import DesignError, build_design
from mixedanova.design.formula import parse_formula


def _design(formula: str, data: pd.DataFrame, **kw):
    return build_design(parse_formula(formula), data, **kw)


def test_sleepstudy_response_and_fixed_matrix(sleepstudy):
    d = _design("Reaction ~ Days + (Days|Subject)", sleepstudy)
    # R: dim(getME(m, "X")) == c(180, 2); colnames "(Intercept)", "Days"
    assert d.X.shape == (180, 2)
    assert [r_name(n) for n in d.x_names] == ["(Intercept)", "Days"]
    np.testing.assert_array_equal(d.X[:, 0], np.ones(180))
    np.testing.assert_array_equal(d.X[:, 1], sleepstudy["Days"].to_numpy(dtype=float))
    np.testing.assert_array_equal(d.y, sleepstudy["Reaction"].to_numpy(dtype=float))
    assert d.nobs == 180 and d.p == 2 and d.n_dropped == 0


def test_sleepstudy_random_block_and_codebook(sleepstudy):
    d = _design("Reaction ~ Days + (Days|Subject)", sleepstudy)
    ref = load_reference("sleepstudy_reml")
    (b,) = d.blocks
    assert b.group == "Subject" and b.factors == ("Subject",)
    # R: ngrps(m) == 18; colnames of ranef(m)$Subject == c("(Intercept)", "Days")
    assert b.nlev == ref["n_groups"]["Subject"] == 18
    assert b.q == 2 and list(b.columns) == ref["ranef"]["Subject"]["terms"]
    # R: levels(sleepstudy$Subject) (= rownames(ranef(m)$Subject)), in that order
    assert list(b.levels) == [str(v) for v in ref["ranef"]["Subject"]["levels"]]
    # each observation's code points at its own subject's level
    assert [b.levels[c] for c in b.codes] == sleepstudy["Subject"].astype(str).tolist()
    np.testing.assert_array_equal(b.zraw, np.c_[np.ones(180), sleepstudy["Days"]])


def test_sleepstudy_z_has_one_intercept_and_one_slope_column_per_subject(sleepstudy):
    d = _design("Reaction ~ Days + (Days|Subject)", sleepstudy)
    Z = d.Z_dense().to_numpy()
    # R: dim(getME(m, "Z")) == c(180, 36): 18 subjects x (intercept, Days)
    assert Z.shape == (180, 36)
    subj = sleepstudy["Subject"].astype(str).to_numpy()
    levels = sorted(set(subj), key=int)
    for i in (0, 1, 9, 10, 179):
        k = levels.index(subj[i])
        expected = np.zeros(36)
        expected[2 * k] = 1.0
        expected[2 * k + 1] = sleepstudy["Days"].iloc[i]
        np.testing.assert_array_equal(Z[i], expected)


def test_integer_group_levels_sort_as_numbers():
    # R: levels(factor(c(10, 9, 100))) == c("9", "10", "100") (numeric sort, not text)
    df = pd.DataFrame({"y": np.arange(6.0), "g": [10, 9, 100, 10, 9, 100]})
    (b,) = _design("y ~ 1 + (1|g)", df).blocks
    assert list(b.levels) == ["9", "10", "100"]
    assert list(b.codes) == [1, 0, 2, 1, 0, 2]


def test_missing_values_dropped_and_counted(sleepstudy):
    df = sleepstudy.copy()
    df.loc[[0, 5, 7], "Reaction"] = np.nan
    df.loc[[7, 9], "Days"] = np.nan
    df["unused"] = np.nan          # a column the formula does not use is not looked at
    d = _design("Reaction ~ Days + (Days|Subject)", df)
    # rows 0, 5, 7, 9 have a missing value: 4 dropped (row 7 twice), 176 kept
    # (R: na.omit; nobs(m) == 176)
    assert d.n_dropped == 4 and d.nobs == 176 and d.X.shape == (176, 2)
    assert not {0, 5, 7, 9} & set(d.row_index)
    assert ma.lmm("Reaction ~ Days + (Days|Subject)", df).n_dropped == 4


def test_missing_values_refused_on_request(sleepstudy):
    df = sleepstudy.copy()
    df.loc[[0, 5], "Reaction"] = np.nan
    with pytest.raises(DesignError, match=r"missing values in 'Reaction' \(2 rows\)"):
        _design("Reaction ~ Days + (Days|Subject)", df, missing="raise")


@pytest.mark.parametrize("formula, column, role, close", [
    ("Reaction ~ Dayz + (Days|Subject)", "Dayz", "fixed effects", "Days"),
    ("Reaction ~ Days + (Days|Subj)", "Subj", r"grouping factor of \(Days\|Subj\)", "Subject"),
    ("Reactoin ~ Days + (1|Subject)", "Reactoin", "response", "Reaction"),
])
def test_unknown_column_is_named_with_a_suggestion(sleepstudy, formula, column, role, close):
    with pytest.raises(DesignError, match=rf"column '{column}' \({role}\) is not in the data; "
                                          rf"did you mean '{close}'\?"):
        _design(formula, sleepstudy)


def test_treatment_contrasts_as_r(bhh_penicillin):
    d = _design("yield ~ treat + (1|blend)", bhh_penicillin)
    # R: colnames(model.matrix(~ treat)) with contr.treatment: the first level (A) is
    # the reference, one indicator column per other level
    ref = load_reference("bhh_penicillin_reml")
    assert [r_name(n) for n in d.x_names] == ref["fixed"]["names"] == \
        ["(Intercept)", "treatB", "treatC", "treatD"]
    treat = bhh_penicillin["treat"].to_numpy()
    expected = np.c_[np.ones(len(treat)), treat == "B", treat == "C", treat == "D"]
    np.testing.assert_array_equal(d.X, expected.astype(float))


def test_nested_grouping_expands_as_lme4(pastes):
    # lme4: (1 | batch/cask) == (1 | cask:batch) + (1 | batch), the terms ordered by
    # decreasing number of levels (mkReTrms): "groups: cask:batch, 30; batch, 10"
    d = _design("strength ~ 1 + (1|batch/cask)", pastes)
    assert [(b.group, b.nlev) for b in d.blocks] == [("cask:batch", 30), ("batch", 10)]
    assert d.theta_layout().names == ("cask:batch.(Intercept)", "batch.(Intercept)")
    # the interaction's levels read "<cask>:<batch>", as R's cask:batch
    assert set(d.blocks[0].levels) == {f"{c}:{b}" for b, c in
                                      zip(pastes["batch"], pastes["cask"])}


def test_interaction_levels_in_r_order(pastes):
    ref = load_reference("pastes_nested_reml")   # strength ~ 1 + (1|batch) + (1|batch:cask)
    d = _design(ref["formula"], pastes)
    # R: ngrps(m); rownames(ranef(m)$`batch:cask`), rownames(ranef(m)$batch)
    assert {b.group: b.nlev for b in d.blocks} == ref["n_groups"]
    assert [b.group for b in d.blocks] == [v["group"] for v in ref["varcorr"][:-1]]
    for b in d.blocks:
        assert list(b.levels) == [str(v) for v in ref["ranef"][b.group]["levels"]]


def test_double_bar_gives_uncorrelated_terms(sleepstudy):
    ref = load_reference("sleepstudy_uncorr_reml")   # Reaction ~ Days + (Days || Subject)
    d = _design(ref["formula"], sleepstudy)
    # lme4: (Days || Subject) == (1 | Subject) + (0 + Days | Subject)
    assert [(b.group, b.columns, b.nlev) for b in d.blocks] == [
        ("Subject", ("(Intercept)",), 18), ("Subject", ("Days",), 18)]
    # R: names(getME(m, "theta"))
    assert list(d.theta_layout().names) == ref["theta_names"]


def test_crossed_terms_ordered_by_levels(penicillin):
    ref = load_reference("penicillin_crossed_reml")  # diameter ~ 1 + (1|plate) + (1|sample)
    d = _design("diameter ~ 1 + (1|sample) + (1|plate)", penicillin)
    # R: ngrps(m): plate 24, sample 6; the term with more levels first whatever the
    # order written
    assert [(b.group, b.nlev) for b in d.blocks] == [("plate", 24), ("sample", 6)]
    assert list(d.theta_layout().names) == ref["theta_names"]


def test_one_level_group_is_refused():
    df = pd.DataFrame({"y": [1.0, 2.0, 3.0], "g": ["a", "a", "a"]})
    with pytest.raises(DesignError, match=r"grouping factor 'g' of \(1\|g\) has only one level"):
        _design("y ~ 1 + (1|g)", df)


def test_formula_without_random_term_is_refused(sleepstudy):
    with pytest.raises(DesignError, match="no random-effects term"):
        _design("Reaction ~ Days", sleepstudy)
