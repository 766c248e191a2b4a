"""ANOVA F tables against lmerTest 3.1-3 ``anova(m, type = 1 | 3, ddf = ...)``.

For every case in tests/reference with fixed terms beyond the intercept:
``anova_type3`` / ``anova_type1`` x ``satterthwaite`` / ``kenward_roger``.
Tolerances (issue 4): F and den_df 1e-3 relative; p 1e-3 relative or 1e-10
absolute; Sum Sq and Mean Sq 1e-3 relative; NumDF exact.
"""
from __future__ import annotations


import numpy as np
import pytest

import mixedanova as ma
from _refdata import LMER_CASES, load_reference, fit_reference

ANOVA_CASES = [c for c in LMER_CASES if "anova_type3" in load_reference(c)]
R_DDF = {"satterthwaite": "Satterthwaite", "kenward_roger": "Kenward-Roger"}


_fit = fit_reference


@pytest.fixture(scope="module", params=ANOVA_CASES)
def fitted(request, reference_fit):
    return reference_fit(request.param)


def _check_table(tab, block, what: str, names=None) -> None:
    assert block["status"] == "ok", what
    rows = block["table"]
    assert len(tab) == len(rows), what
    for i, row in enumerate(rows):
        got = tab.iloc[i] if names is None else tab.loc[names[i]]
        if names is None:
            assert tab.index[i] == row["term"], f"{what}: term {i}"
        term = row["term"]
        assert got["num_df"] == row["num_df"], f"{what} [{term}]: NumDF"
        for col in ("F", "den_df", "sum_sq", "mean_sq"):
            assert got[col] == pytest.approx(row[col], rel=1e-3), f"{what} [{term}]: {col}"
        assert got["p"] == pytest.approx(row["p"], rel=1e-3, abs=1e-10), f"{what} [{term}]: p"


@pytest.mark.parametrize("type_", [3, 1])
@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward_roger"])
def test_anova_table(fitted, type_, ddf):
    ref, res = fitted
    block = ref[f"anova_type{type_}"][ddf]
    call = f"{ref['case']}: anova(m, type = {type_}, ddf = '{R_DDF[ddf]}')"
    if block["status"] != "ok":
        # R: lmerTest refuses Kenward-Roger for ML fits
        assert ref["method"] == "ML" and ddf == "kenward_roger", call
        with pytest.raises(ValueError, match="only available for REML"):
            res.anova(type_, ddf=ddf.replace("_", "-"))
        return
    tab = res.anova(type_, ddf=ddf.replace("_", "-"))
    assert list(tab.columns) == ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p"]
    _check_table(tab, block, call)
    heading = "Type III" if type_ == 3 else "Type I"
    assert heading in tab.heading and R_DDF[ddf].split("-")[0] in tab.heading


@pytest.mark.parametrize("contrasts", ["contr.sum", "contr.helmert"])
@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward_roger"])
def test_type3_does_not_depend_on_contrasts(contrasts, ddf):
    # lmerTest's type III hypotheses are mapped from treatment coding
    # (get_contrasts_type3), so anova(m, type = 3) with options(contrasts =
    # c("contr.sum", "contr.poly")) gives the reference table of the
    # treatment-coded fit: R: anova(m, type = 3, ddf = ...) on cake_reml.
    formula = (f"angle ~ C(recipe, {contrasts}) * C(temperature, {contrasts}) "
               "+ (1|recipe:replicate)")
    ref, res = _fit("cake_reml", formula)
    tab = res.anova(3, ddf=ddf.replace("_", "-"))
    names = list(tab.index)
    _check_table(tab, ref["anova_type3"][ddf],
                 f"cake_reml {contrasts}: anova(m, type = 3, ddf = '{R_DDF[ddf]}')", names)


@pytest.mark.parametrize("case", ["cake_reml", "oats_splitplot_reml"])
def test_type2_equals_type1_in_balanced_designs(case):
    # In these balanced designs lmerTest's type II tests coincide with the
    # sequential ones: R: anova(m, type = 1) (reference) = anova(m, type = 2).
    ref, res = _fit(case)
    tab = res.anova(2)
    assert "Type II " in tab.heading
    _check_table(tab, ref["anova_type1"]["satterthwaite"], f"{case}: anova(m, type = 2)")


def test_hypothesis_matrices_shapes():
    ref, res = _fit("cake_reml")
    for type_ in (1, 2, 3):
        Ls = res.anova(type_).hypotheses
        assert list(Ls) == ["recipe", "temperature", "recipe:temperature"]
        assert [L.shape[0] for L in Ls.values()] == [2, 5, 10]
        assert all(L.shape[1] == res.design.p for L in Ls.values())
        # no hypothesis involves the intercept alone
        for L in Ls.values():
            assert np.linalg.matrix_rank(L) == L.shape[0]


def test_intercept_only_model_has_empty_table():
    ref, res = _fit("dyestuff_reml")
    # R: anova(m) for Yield ~ 1 + (1|Batch) has no rows
    for type_ in (1, 2, 3):
        assert len(res.anova(type_)) == 0
    with pytest.raises(ValueError, match="type must be 1, 2 or 3"):
        res.anova(4)
